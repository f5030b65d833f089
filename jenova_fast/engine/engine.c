/* The sources of libjenova-llama besides llama.cpp's own archives: the patch set it was built with, so that the
   Python side can check it loaded the library it asked for (JENOVA_ENGINE_PATCHES is set by the build), and the
   BLAS the CPU backend's F32 products run on (patch 0005), found and handed over by the Python side, and the
   activation checkpoints (patch 0006). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef JENOVA_ENGINE_PATCHES
#define JENOVA_ENGINE_PATCHES "unknown"
#endif

#if defined(_WIN32)
#define JENOVA_API __declspec(dllexport)
#else
#define JENOVA_API __attribute__((visibility("default")))
#endif

JENOVA_API const char * jenova_engine_patches(void) {
    return JENOVA_ENGINE_PATCHES;
}

/* patch 0005's hooks (ggml-cpu/ops.h, ggml.c) */
typedef void (*ggml_cpu_sgemm_t)(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float * a,
                                 int64_t lda, const float * b, int64_t ldb, float * c, int64_t ldc);
void ggml_cpu_set_sgemm(ggml_cpu_sgemm_t sgemm);
void ggml_set_backward_gemm_out_prod(bool on);

/* cblas_sgemm, with 64-bit (ILP64, as numpy's bundled OpenBLAS) or 32-bit integers */
typedef void (*cblas_sgemm64_t)(int order, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                                const float * a, int64_t lda, const float * b, int64_t ldb, float beta, float * c,
                                int64_t ldc);
typedef void (*cblas_sgemm32_t)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float * a,
                                int lda, const float * b, int ldb, float beta, float * c, int ldc);
typedef int (*threads_local_t)(int n);

static cblas_sgemm64_t sgemm64;
static cblas_sgemm32_t sgemm32;
static threads_local_t threads_local;

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

static void blas_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float * a, int64_t lda,
                       const float * b, int64_t ldb, float * c, int64_t ldc) {
    threads_local(1); /* each ggml thread computes its own share: the BLAS must not start threads of its own */
    const int ta = trans_a ? TRANS : NO_TRANS;
    const int tb = trans_b ? TRANS : NO_TRANS;
    if (sgemm64) {
        sgemm64(ROW_MAJOR, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
    } else {
        sgemm32(ROW_MAJOR, ta, tb, (int) m, (int) n, (int) k, 1.0f, a, (int) lda, b, (int) ldb, 0.0f, c, (int) ldc);
    }
}

/* Hand over cblas_sgemm (ilp64: its integers are 64-bit) and openblas_set_num_threads_local, or NULLs to go back to
   ggml's own kernels. Call before a training context is made: the backward graph is built for one or the other. */
JENOVA_API void jenova_engine_use_blas(void * sgemm, int ilp64, void * set_threads_local) {
    const bool on = sgemm != NULL && set_threads_local != NULL;
    sgemm64 = on && ilp64 ? (cblas_sgemm64_t) sgemm : NULL;
    sgemm32 = on && !ilp64 ? (cblas_sgemm32_t) sgemm : NULL;
    threads_local = on ? (threads_local_t) set_threads_local : NULL;
    ggml_cpu_set_sgemm(on ? blas_sgemm : NULL);
    ggml_set_backward_gemm_out_prod(on);
}

/* patch 0006's hook (ggml.c): the name prefix of the block outputs kept as checkpoints, or NULL to keep every
   activation. The string must outlive the training contexts. */
void ggml_set_checkpoints(const char * name_prefix);

JENOVA_API void jenova_engine_checkpoints(const char * name_prefix) {
    ggml_set_checkpoints(name_prefix);
}
