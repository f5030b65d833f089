"""jq over xargs: `find -name '*.json' -print0 | xargs -0 -P N -n BATCH sh -c 'awk ... | jq --seq ...'`.

jq reads a batch's files as one stream and stops at the first parse error, so a corrupt file would cost
the rest of its batch (and a truncated one swallows the next file). awk therefore frames each file with an
RS byte and jq runs in `--seq` mode, which skips a bad text up to the next RS. jq turns invalid UTF-8
into U+FFFD instead of rejecting the file; such extra records show in the harness's records check.
Each jq writes its own part file (parallel jq processes on one pipe could interleave long lines); the RS
bytes jq puts before each output are stripped when the parts are joined.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from benchmarks.peers._common import parse_args

BATCH = 500
FILTER = r"""
select(type == "object" and (.content | type) == "string" and .content != "")
| (if has("topic") then .topic else "general" end) as $topic
| (if has("user") then .user else "user" end) as $user
| {messages: [
    {role: "user", content: ("Hey Jenova, I've been thinking about our conversations on '\($topic)'. "
      + "Can you synthesize your understanding of this for me? What have you learned about my perspective on it?")},
    {role: "assistant", content: ("Of course, \($user). Based on our discussions, "
      + "I've developed an insight regarding '\($topic)'. My understanding is that: \(.content)")}
  ]}
"""
# xargs runs this per batch; "$0" is the filter file, the batch's paths follow.
RUN_BATCH = (
    'LC_ALL=C awk \'FNR == 1 { printf "\\036" } { print }\' "$@"'
    ' | jq --seq -c -f "$0" > "$(mktemp -p "$JQ_PARTS" part.XXXXXXXX)"'
)


def main() -> None:
    args = parse_args(__doc__)
    for tool in ("jq", "find", "xargs", "awk", "mktemp"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH; install it (e.g. apt-get install -y jq) or skip this peer")
    with tempfile.TemporaryDirectory(dir=args.output.parent) as work:
        filter_path = os.path.join(work, "record.jq")
        with open(filter_path, "w", encoding="utf-8") as f:
            f.write(FILTER)
        parts = os.path.join(work, "parts")
        os.mkdir(parts)
        find = subprocess.Popen(
            [
                "find",
                str(args.insights_dir),
                "-name",
                ".*",
                "-prune",
                "-o",
                "-type",
                "f",
                "-name",
                "*.json",
                "!",
                "-name",
                "concerns.json",
                "-print0",
            ],
            stdout=subprocess.PIPE,
        )
        xargs = subprocess.run(
            ["xargs", "-0", "-P", str(max(1, args.threads)), "-n", str(BATCH), "sh", "-c", RUN_BATCH, filter_path],
            stdin=find.stdout,
            env={**os.environ, "JQ_PARTS": parts},
            check=False,
        )
        find.stdout.close()
        find.wait()
        with open(args.output, "wb") as out:
            for name in sorted(os.listdir(parts)):
                with open(os.path.join(parts, name), "rb") as f:
                    out.write(f.read().replace(b"\x1e", b""))
    if xargs.returncode != 0:
        sys.exit(f"xargs failed with exit status {xargs.returncode}")


if __name__ == "__main__":
    main()
