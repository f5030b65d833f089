/* The one source of libjenova-llama besides llama.cpp's own archives: the patch set it was built with, so that
   the Python side can check it loaded the library it asked for. JENOVA_ENGINE_PATCHES is set by the build. */
#ifndef JENOVA_ENGINE_PATCHES
#define JENOVA_ENGINE_PATCHES "unknown"
#endif

#if defined(_WIN32)
__declspec(dllexport)
#else
__attribute__((visibility("default")))
#endif
const char * jenova_engine_patches(void) {
    return JENOVA_ENGINE_PATCHES;
}
