"""Kill -9 campaign: a study killed with SIGKILL at random moments, up to three times a
trial, then run to the end, must store bit-identical numbers and weights to an
uninterrupted run. Not part of the suite (minutes); run by hand:

    python tests/kill_campaign.py --trials 10 [--stack-mode auto|loop|grouped] [--workers 2] [--seed 0]
    python tests/kill_campaign.py --stack-mode grouped --trials 20

Prints one line a trial and the count of identical ones. In one process every stack mode
resumes bit-identically: loop because a member's numbers are its own, grouped (what auto
picks for the smoke model on the CPU) because a grouped stack's joint saves and its levels'
records each commit as one, so that no kill changes which networks step together
(lthfast/store/level.py, "Group commits"; tests/test_group_commit.py aims at both windows).
With --workers > 1 only loop is: which trainings share a stack then depends on timing.
"""
import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["study", "--preset", "smoke", "--seeds", "0", "--levels", "2", "--sharpness-levels", "", "--noreport"]


def fingerprint(root: Path) -> dict:
    """Every stored number (timings aside) and every weight file's bytes, by path."""
    out = {}
    for path in sorted(root.glob("imp_*/**/*")):
        rel = str(path.relative_to(root))
        if path.name == "level.json":
            record = json.loads(path.read_text())
            out[rel] = {k: v for k, v in record.items() if "seconds" not in k and k != "overhead_breakdown"}
        elif path.suffix == ".json" and "analysis" in path.parts:
            out[rel] = {k: v for k, v in json.loads(path.read_text())["result"].items() if "seconds" not in k}
        elif path.name in ("final.pt", "rewind.pt", "mask.pt", "baseline.pt"):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run(root: Path, extra: list[str], kill_at: float | None = None) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "lthfast", *COMMAND, "--root", str(root), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_at is not None:
        try:
            proc.wait(timeout=kill_at)
        except subprocess.TimeoutExpired:
            # SIGKILL to its workers and to it, as a machine failure would: no handler runs,
            # nothing is saved on the way out.
            subprocess.run(["pkill", "-9", "-P", str(proc.pid)], check=False)
            proc.kill()
    proc.wait()
    return proc.returncode


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stack-mode", default="auto", choices=("auto", "loop", "grouped"),
                        help="with --workers > 1 only loop is bit-identical: which trainings share a stack then "
                        "depends on timing, and grouped rounding on the stack")
    args = parser.parse_args()
    extra = (["--workers", str(args.workers)] if args.workers > 1 else []) + ["--stack-mode", args.stack_mode]
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        start = time.perf_counter()
        assert run(reference, extra) == 0
        whole = time.perf_counter() - start
        expected = fingerprint(reference)
        identical = 0
        for trial in range(args.trials):
            root = Path(tmp) / f"trial{trial}"
            kills = [round(rng.uniform(0.5, whole), 2) for _ in range(rng.randint(1, 3))]
            for moment in kills:
                run(root, extra, kill_at=moment)
            code = run(root, extra)
            same = code == 0 and fingerprint(root) == expected
            identical += same
            print(f"trial {trial}: killed at {kills} s, then finished with exit {code}: "
                  f"{'bit-identical' if same else 'DIFFERENT'} ({len(expected)} files and records)", flush=True)
        print(f"{identical} of {args.trials} trials bit-identical (an uninterrupted run takes {whole:.0f} s)")
    sys.exit(0 if identical == args.trials else 1)


if __name__ == "__main__":
    main()
