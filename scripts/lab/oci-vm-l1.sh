#!/bin/sh
# The part of scripts/oci-vm-lab that runs inside the lab's L1 (as its command, in place of the
# sandbox CLI): a private containerd drives `sandbox-runtime-vm` through its runc shim
# (`ctr run --runc-binary`, the switch a containerd config sets with BinaryName). Each check
# prints one line; the last line is the guest kernel's release. Exits 0 only if every check
# passed.
set -u
runtime_dir=/opt/sandbox
runtime=$runtime_dir/sandbox-runtime-vm
ln -sf sandbox-runtime "$runtime"
work=$(mktemp -d /tmp/oci-vm.XXXXXX)
sock=$work/containerd.sock
failed=0

fail() {
    echo "FAIL: $*"
    failed=1
}

cat > "$work/config.toml" <<CFG
version = 2
root = "$work/root"
state = "$work/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = "$work/debug.sock"
CFG
containerd --config "$work/config.toml" > "$work/containerd.log" 2>&1 &
daemon=$!
n=0
until ctr -a "$sock" version > /dev/null 2>&1; do
    n=$((n + 1))
    if [ $n -gt 300 ]; then
        echo "FAIL: containerd did not come up:"
        tail -20 "$work/containerd.log"
        exit 1
    fi
    sleep 0.1
done
echo "containerd $(ctr -a "$sock" version | awk '/Server:/ {s=1} s && /Version:/ {print $2; exit}') is up"

# The bundle's root: a static busybox, its applets as links.
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp" "$rootfs/etc"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo cat sleep uname true false id hostname env; do
    ln -s busybox "$rootfs/bin/$applet"
done
echo "a file of the bundle" > "$rootfs/etc/marker"

ctr_run() {
    ctr -a "$sock" run --rm --runc-binary "$runtime" --rootfs "$rootfs" "$@"
}

# 1. Output and exit status; the workload sees the bundle's root.
out=$(ctr_run vm-status sh -c 'cat /etc/marker; echo to-stderr >&2; exit 3' 2>&1)
status=$?
[ "$status" = 3 ] || fail "exit status: $status, expected 3 (output: $out)"
case "$out" in *"a file of the bundle"*) ;; *) fail "the bundle's file was not seen: $out" ;; esac
case "$out" in *to-stderr*) ;; *) fail "stderr did not come back: $out" ;; esac
[ $failed = 0 ] && echo "ok: output and exit status 3 through containerd"

# 2. A terminal (ctr run -t, under script(1) for a pty of its own).
out=$(script -qec "ctr -a $sock run --rm -t --runc-binary $runtime --rootfs $rootfs vm-tty sh -c 'test -t 0 && test -t 1 && echo has-a-tty'" /dev/null 2>&1)
case "$out" in *has-a-tty*) echo "ok: -t gives the workload a terminal" ;; *) fail "-t: no terminal: $out" ;; esac

# 3. A signal: ctr task kill reaches the workload in the guest, whose trap sets the status.
ctr_run vm-signal sh -c 'trap "exit 7" TERM; echo waiting; while :; do sleep 0.1; done' > "$work/signal.out" 2>&1 &
runner=$!
n=0
until grep -q waiting "$work/signal.out" 2> /dev/null; do
    n=$((n + 1))
    [ $n -gt 1200 ] && break
    sleep 0.1
done
ctr -a "$sock" task kill -s SIGTERM vm-signal
wait $runner
status=$?
if [ "$status" = 7 ]; then echo "ok: SIGTERM reached the workload (exit 7 from its trap)"; else fail "signal: status $status, expected 7: $(cat "$work/signal.out")"; fi

# 4. Whose kernel: the guest's own, not L1's.
l1=$(uname -r)
guest=$(ctr_run vm-uname uname -r 2>&1)
if [ -n "$guest" ] && [ "$guest" != "$l1" ]; then
    echo "ok: the workload runs on its own kernel ($guest), not L1's ($l1)"
else
    fail "kernel: the workload reported '$guest', L1 runs '$l1'"
fi

# Nothing left: no task, no container, no state under the runtime's root.
left=$(ctr -a "$sock" containers ls -q)
[ -z "$left" ] || fail "containers left: $left"
kill $daemon 2> /dev/null
wait $daemon 2> /dev/null
if [ -d /run/containerd/runc/default ] && [ -n "$(ls /run/containerd/runc/default 2> /dev/null)" ]; then
    fail "runtime state left: $(ls /run/containerd/runc/default)"
fi
[ $failed = 0 ] || { echo "--- containerd log"; tail -30 "$work/containerd.log"; exit 1; }
echo "$guest"
