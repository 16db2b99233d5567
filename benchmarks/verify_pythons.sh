#!/usr/bin/env bash
# The README's test command (`make test`) under each supported Python, each from a fresh clone of HEAD.
# By hand, on an idle machine: it installs PyTorch once per Python (Python 3.11 takes it from this
# machine's disk, 3.12 / 3.13 download about 3 GB each) and runs the whole suite each time
# (about 15 min per Python on a 2-core CPU on 2026-12-01).
#
#   bash benchmarks/verify_pythons.sh                 # 3.11 3.12 3.13
#   bash benchmarks/verify_pythons.sh 3.12            # one of them
#   KEEP=1 bash benchmarks/verify_pythons.sh 3.13     # keep the clone (its .venv, outputs/) afterwards
#
# Per Python it prints, and appends to benchmarks/verify_pythons.tsv (commit it when the README quotes it):
# the interpreter, install seconds, pytest's summary line (passed / failed / ... in seconds), the wall
# time of `make test`, its peak RSS and its file system output from `/usr/bin/time -v` (the issue's
# measure of "written to disk"). Exit status: 0 when every Python passed.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -gt 0 ]; then VERSIONS=("$@"); else VERSIONS=(3.11 3.12 3.13); fi
LOG="$ROOT/benchmarks/verify_pythons.tsv"
WORK="$(mktemp -d /tmp/verify-pythons.XXXXXX)"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD)"
[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ] && echo "note: uncommitted changes are not in the clones (HEAD $COMMIT is tested)" >&2

interpreter() {  # the pythonX.Y that runs here: on PATH, else pyenv's
  local v=$1 candidate
  for candidate in "python$v" "$(pyenv root 2>/dev/null)"/versions/"$v".*/bin/"python$v"; do
    if "$candidate" -c "import ensurepip, venv" >/dev/null 2>&1; then command -v "$candidate"; return 0; fi
  done
  return 1
}

[ -f "$LOG" ] || printf 'date\tcommit\tpython\tinstall_s\tpytest_summary\tmake_test_wall_s\tpeak_rss_gb\tfs_output_gb\tstatus\n' >"$LOG"
failed=0
for v in "${VERSIONS[@]}"; do
  py="$(interpreter "$v")" || { echo "python$v: not found, skipped" >&2; failed=1; continue; }
  clone="$WORK/py$v"
  git clone -q "$ROOT" "$clone" && git -C "$clone" checkout -q "$COMMIT"
  echo "== python$v ($("$py" --version 2>&1), $py) in $clone"
  start=$(date +%s)
  (cd "$clone" && make install PYTHON="$py") >"$WORK/install-$v.log" 2>&1
  install_rc=$?
  install_s=$(( $(date +%s) - start ))
  if [ $install_rc -ne 0 ]; then
    echo "install failed: $WORK/install-$v.log" >&2; failed=1
    printf '%s\t%s\t%s\t%s\t%s\t\t\t\t%s\n' "$(date -I)" "$COMMIT" "$v" "$install_s" "install failed" "failed" >>"$LOG"
    continue
  fi
  # exactly the README's command; PYTHON only matters if .venv were missing
  (cd "$clone" && PYTHON="$py" /usr/bin/time -v -o "$WORK/time-$v.txt" make test) >"$WORK/test-$v.log" 2>&1
  rc=$?
  summary="$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$WORK/test-$v.log" | tail -1 | sed -E 's/^=+ //; s/ =+$//')"
  wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time-$v.txt")"
  wall_s="$(echo "$wall" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')"
  rss_gb="$(awk -F': ' '/Maximum resident set size/ {printf "%.2f", $2/1048576}' "$WORK/time-$v.txt")"
  fs_gb="$(awk -F': ' '/File system outputs/ {printf "%.2f", $2*512/1e9}' "$WORK/time-$v.txt")"
  status=$([ $rc -eq 0 ] && echo passed || echo "failed (rc $rc)")
  [ $rc -eq 0 ] || failed=1
  printf '%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\n' "$(date -I)" "$COMMIT" "$("$py" --version 2>&1 | cut -d' ' -f2)" \
    "$install_s" "$summary" "$wall_s" "$rss_gb" "$fs_gb" "$status" >>"$LOG"
  echo "   install $install_s s; make test: $summary; wall ${wall_s%.*} s; peak RSS $rss_gb GB; written $fs_gb GB; $status"
  [ -n "${KEEP:-}" ] || rm -rf "$clone"
done
echo "logs: $WORK; table: $LOG"
column -t -s $'\t' "$LOG"
exit $failed
