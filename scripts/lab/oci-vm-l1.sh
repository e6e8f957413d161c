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
for applet in sh echo cat sleep uname true false id hostname env grep wc; do
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
# pause/resume stop and continue the VM (its holder, vCPUs included).
if ctr -a "$sock" task pause vm-signal && ctr -a "$sock" task ls | grep vm-signal | grep -q PAUSED \
    && ctr -a "$sock" task resume vm-signal && ctr -a "$sock" task ls | grep vm-signal | grep -q RUNNING; then
    echo "ok: pause and resume (the task showed PAUSED, then RUNNING)"
else
    fail "pause/resume: $(ctr -a "$sock" task ls)"
fi
ctr -a "$sock" task kill -s SIGTERM vm-signal
wait $runner
status=$?
if [ "$status" = 7 ]; then echo "ok: SIGTERM reached the workload (exit 7 from its trap)"; else fail "signal: status $status, expected 7: $(cat "$work/signal.out")"; fi

# 4. The bundle's capabilities and seccomp profile hold inside the guest: ctr's default set
# (Docker's 14, CapEff 00000000a80425fb, not a guest root's full set) and, with --seccomp, a
# filter (Seccomp: 2). Its masked paths (/proc/kcore reads empty) and read-only paths
# (/proc/sys mounted ro) too.
out=$(ctr -a "$sock" run --rm --seccomp --runc-binary "$runtime" --rootfs "$rootfs" vm-confined sh -c 'grep -E "^(CapEff|Seccomp):" /proc/self/status' 2>&1)
case "$out" in
*00000000a80425fb*Seccomp:*2*) echo "ok: the bundle's capabilities and seccomp filter apply in the guest" ;;
*) fail "confinement in the guest: $out" ;;
esac
out=$(ctr_run vm-protected sh -c 'echo "kcore $(cat /proc/kcore | wc -c) bytes"; grep " /proc/sys " /proc/self/mountinfo' 2>&1)
case "$out" in
*"kcore 0 bytes"*" /proc/sys ro,"*) echo "ok: the bundle's masked and read-only paths apply in the guest" ;;
*) fail "masked and read-only paths in the guest: $out" ;;
esac

# 5. exec (ctr task exec, the runtime's `exec` through the agent): output and exit status, and
# the process joins the workload's namespaces, so it sees the hostname the workload set in its
# own UTS namespace (CAP_SYS_ADMIN added for that).
ctr -a "$sock" run --rm --cap-add CAP_SYS_ADMIN --runc-binary "$runtime" --rootfs "$rootfs" vm-exec \
    sh -c 'hostname set-by-workload && echo ready; sleep 600' > "$work/exec.out" 2>&1 &
runner=$!
n=0
until grep -q ready "$work/exec.out" 2> /dev/null; do
    n=$((n + 1))
    [ $n -gt 1200 ] && break
    sleep 0.1
done
seen=$(ctr -a "$sock" task exec --exec-id e1 vm-exec hostname 2>&1)
ctr -a "$sock" task exec --exec-id e2 vm-exec sh -c 'echo from-exec; exit 5' > "$work/exec2.out" 2>&1
status=$?
if [ "$seen" = set-by-workload ] && [ "$status" = 5 ] && grep -q from-exec "$work/exec2.out"; then
    echo "ok: exec through containerd (exit 5, output back) joins the workload's namespaces (hostname $seen)"
else
    fail "exec: hostname '$seen' (expected set-by-workload), status $status (expected 5), output: $(cat "$work/exec2.out"); workload: $(cat "$work/exec.out")"
    for f in holder.log console.log; do
        echo "--- vm-exec's $f"
        tail -40 "/run/containerd/runc/default/vm-exec/$f" 2>&1
    done
fi
ctr -a "$sock" task kill -s SIGKILL vm-exec
wait $runner

# 6. A host file bind-mounted, as podman does with /etc/hosts and /etc/resolv.conf: copied in at
# create (read-only with ro); a directory bind mount refused in one line naming it.
printf 'copied from L1\n' > "$work/greeting"
out=$(ctr -a "$sock" run --rm --runc-binary "$runtime" \
    --mount "type=bind,src=$work/greeting,dst=/etc/greeting,options=rbind:ro" --rootfs "$rootfs" vm-file \
    sh -c 'cat /etc/greeting; echo x 2> /dev/null > /etc/greeting && echo WROTE' 2>&1)
case "$out" in
*WROTE*) fail "a read-only copied file was writable: $out" ;;
*"copied from L1"*) echo "ok: a bind-mounted host file is copied in, read-only as asked" ;;
*) fail "copied file: $out" ;;
esac
out=$(ctr -a "$sock" run --rm --runc-binary "$runtime" \
    --mount "type=bind,src=$work,dst=/data,options=rbind" --rootfs "$rootfs" vm-dir true 2>&1)
status=$?
case "$status:$out" in
0:*) fail "a directory bind mount was accepted: $out" ;;
*"/data"*"not a regular file"*) echo "ok: a directory bind mount is refused, naming it" ;;
*) fail "directory bind mount: status $status: $out" ;;
esac
ctr -a "$sock" containers rm vm-dir > /dev/null 2>&1

# 7. Whose kernel: the guest's own, not L1's.
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

# --speed: create -> start -> exit of /bin/true through the runtime against `sandbox run --mode
# vm -- /bin/true`, the same guest kernel and image, 5 runs each after one warm-up (medians, ms).
if [ "${2:-}" = --speed ]; then
    bundle=$work/bundle
    mkdir -p "$bundle"
    "$runtime" spec -b "$bundle"
    sed -i -e 's/"terminal": true/"terminal": false/' -e 's/^      "sh"$/      "\/bin\/true"/' "$bundle/config.json"
    ln -s "$rootfs" "$bundle/rootfs"
    now() { /usr/bin/date +%s%N; }
    median() { sort -n | sed -n 3p; }
    for i in 0 1 2 3 4 5; do
        t=$(now)
        "$runtime" --root "$work/rt" run --bundle "$bundle" "speed-$i" > /dev/null 2>&1 || fail "runtime run $i failed" >&2
        [ $i = 0 ] || echo $((($(now) - t) / 1000000))
    done > "$work/runtime.ms"
    for i in 0 1 2 3 4 5; do
        t=$(now)
        "$runtime_dir/sandbox" run --mode vm -- /bin/true > /dev/null 2>&1 || fail "sandbox run $i failed" >&2
        [ $i = 0 ] || echo $((($(now) - t) / 1000000))
    done > "$work/run.ms"
    r=$(median < "$work/runtime.ms")
    s=$(median < "$work/run.ms")
    echo "speed: sandbox-runtime-vm run (create, start, exit) of /bin/true: median $r ms ($(tr '\n' ' ' < "$work/runtime.ms")ms)"
    echo "speed: sandbox run --mode vm -- /bin/true: median $s ms ($(tr '\n' ' ' < "$work/run.ms")ms)"
    echo "speed: ratio $(awk "BEGIN {printf \"%.2f\", $r / $s}") (lab: L1 under QEMU TCG, nested KVM; debug or release as built)"
    "$runtime" --root "$work/rt" run --keep --bundle "$bundle" speed-log > /dev/null 2>&1
    echo "speed: where one run's time went (its holder's timeline, ms since create forked it):"
    sed 's/^/speed:   /' "$work/rt/speed-log/holder.log"
    "$runtime" --root "$work/rt" delete speed-log
    [ $failed = 0 ] || exit 1
fi
echo "$guest"
