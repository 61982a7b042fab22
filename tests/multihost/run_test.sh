#!/usr/bin/env bash
# Two "hosts" on one machine: two network namespaces joined by a veth pair,
# with mpirun started in the first and its second rank launched in the other
# through a small rsh agent (tests/multihost/ns_agent.sh) that runs commands
# with `ip netns exec`. The ranks talk TCP over the veth only (--mca btl
# tcp,self), as two nodes of a cluster would.
#
#     run_test.sh TAPEGRAD
#
# Checks:
#   1. 2 ranks over TCP give the same loss at every step as 2 ranks over
#      shared memory (bit-identical step lines);
#   2. a rank killed (SIGKILL) on the second host ends the job within 30 s,
#      with a non-zero exit (mpirun's 137 for a rank killed by signal 9) and a
#      message naming rank 1 or its host.
# Exits 77 (skipped) when not root or when namespaces cannot be made here.
# Namespaces and links get names unique to this run and are removed by a
# trap whatever happens; traffic stays inside them.
set -uo pipefail

tapegrad=${1:?usage: run_test.sh TAPEGRAD}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

skip() {
    echo "multihost: skipped: $*"
    exit 77
}
fail() {
    echo "multihost: FAIL: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || skip "needs root (ip netns)"
command -v ip >/dev/null || skip "no ip command (Debian: iproute2)"
command -v mpirun >/dev/null || skip "no mpirun"
/usr/bin/python3 -c 'import numpy' 2>/dev/null || skip "no python3-numpy to make the data"

id=$$
nsa=tgmhA$id nsb=tgmhB$id
veth_a=tgva$id veth_b=tgvb$id
net=10.$((200 + id % 50)).$((id / 50 % 250)).
ipa=${net}1 ipb=${net}2
work=$(mktemp -d "${TMPDIR:-/tmp}/tg-multihost.XXXXXX") || exit 1

cleanup() {
    for ns in "$nsa" "$nsb"; do
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$nsa" 2>/dev/null || skip "cannot create a network namespace here"
ip netns add "$nsb" || fail "ip netns add $nsb"
ip link add "$veth_a" type veth peer name "$veth_b" || skip "cannot create a veth pair here"
ip link set "$veth_a" netns "$nsa" && ip link set "$veth_b" netns "$nsb" &&
    ip -n "$nsa" addr add "$ipa/24" dev "$veth_a" && ip -n "$nsb" addr add "$ipb/24" dev "$veth_b" &&
    ip -n "$nsa" link set "$veth_a" up && ip -n "$nsb" link set "$veth_b" up &&
    ip -n "$nsa" link set lo up && ip -n "$nsb" link set lo up || fail "setting up the veth link"

# The rsh agent: host address -> namespace.
cat >"$work/agent.sh" <<AGENT
#!/bin/sh
host=\$1
shift
case "\$host" in
$ipa) ns=$nsa ;;
$ipb) ns=$nsb ;;
*) echo "multihost agent: unknown host \$host" >&2; exit 255 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
AGENT
chmod +x "$work/agent.sh"

# A small synthetic classification set (train and test splits).
/usr/bin/python3 - "$work" <<'PY' || fail "making the data"
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(7)
for split, n in (("train", 512), ("test", 128)):
    y = rng.integers(0, 4, n)
    x = (rng.random((n, 1, 8, 8)) * 40 + y[:, None, None, None] * 50).astype(np.uint8)
    np.save(f"{d}/{split}_x.npy", x)
    np.save(f"{d}/{split}_y.npy", y.astype(np.int64))
PY
for split in train test; do
    "$tapegrad" convert npy --x "$work/${split}_x.npy" --y "$work/${split}_y.npy" \
        --out "$work/d.h5" --split "$split" --num-classes 4 >/dev/null || fail "convert $split"
done

run_args=(train --data "$work/d.h5" --model mlp --batch-size 32 --threads 1 --log-every 1
    --schedule constant --quiet)
mpi_common=(--allow-run-as-root --oversubscribe --bind-to none -np 2)
tcp=(--host "$ipa,$ipb" --mca plm_rsh_agent "$work/agent.sh" --mca btl tcp,self
    --mca btl_tcp_if_include "${net}0/24" --mca oob_tcp_if_include "${net}0/24")

# The step lines of a metrics file without their wall-clock "time".
steps() {
    grep '"event":"step"' "$1" | sed 's/,"time":[0-9.e+-]*}/}/'
}

echo "multihost: shared memory, 2 ranks"
timeout 120 mpirun "${mpi_common[@]}" "$tapegrad" "${run_args[@]}" --max-steps 20 \
    --metrics "$work/shm.jsonl" >"$work/shm.log" 2>&1 ||
    fail "2 ranks on shared memory: $(cat "$work/shm.log")"
echo "multihost: TCP between namespaces $nsa ($ipa) and $nsb ($ipb), 2 ranks"
timeout 120 ip netns exec "$nsa" mpirun "${mpi_common[@]}" "${tcp[@]}" "$tapegrad" \
    "${run_args[@]}" --max-steps 20 --metrics "$work/tcp.jsonl" >"$work/tcp.log" 2>&1 ||
    fail "2 ranks over TCP: $(cat "$work/tcp.log")"
n=$(steps "$work/tcp.jsonl" | wc -l)
[ "$n" -eq 20 ] || fail "TCP run logged $n steps, expected 20"
if ! diff <(steps "$work/shm.jsonl") <(steps "$work/tcp.jsonl") >"$work/diff"; then
    fail "losses over TCP differ from shared memory:
$(cat "$work/diff")"
fi
echo "multihost: the 20 step losses over TCP equal those over shared memory"

echo "multihost: SIGKILL to the rank on $nsb"
start=$(date +%s)
ip netns exec "$nsa" mpirun "${mpi_common[@]}" "${tcp[@]}" "$tapegrad" "${run_args[@]}" \
    --max-steps 1000000 --epochs 100000 --comm-timeout 10 --metrics "$work/kill.jsonl" \
    >"$work/kill.log" 2>&1 &
job=$!
victim=
for _ in $(seq 1 300); do
    if [ -s "$work/kill.jsonl" ] && grep -q '"step":5,' "$work/kill.jsonl"; then
        for p in $(ip netns pids "$nsb"); do
            if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = tapegrad ]; then
                victim=$p
            fi
        done
        break
    fi
    sleep 0.1
done
[ -n "$victim" ] || {
    kill -9 "$job" 2>/dev/null
    fail "the job did not reach step 5 with a tapegrad process in $nsb: $(cat "$work/kill.log")"
}
kill -9 "$victim"
killed=$(date +%s)
waited=0
while kill -0 "$job" 2>/dev/null && [ "$waited" -lt 60 ]; do
    sleep 0.5
    waited=$((waited + 1))
done
if kill -0 "$job" 2>/dev/null; then
    kill -9 "$job"
    fail "the job still runs 30 s after rank 1 was killed: $(cat "$work/kill.log")"
fi
wait "$job"
rc=$?
took=$(($(date +%s) - killed))
[ "$rc" -ne 0 ] || fail "the job exited 0 after rank 1 was killed"
# mpirun names the rank when it notices the death first; when rank 0's TCP
# link notices it first, Open MPI names the peer host instead.
grep -Eq "process rank 1 .*exited on signal 9|no answer from rank 1|Peer host: +$ipb\$" \
    "$work/kill.log" || fail "no message names rank 1 or its host $ipb:
$(cat "$work/kill.log")"
echo "multihost: killed rank 1 at $((killed - start)) s; the job ended $took s later with exit $rc"
echo "multihost: PASS"
