#!/bin/sh
# The part of scripts/oci-vm-conformance that runs inside the lab's L1: the runtime-tools
# validation programs (shipped to /opt/runtime-tools) against sandbox-runtime-vm, each at most
# 90 s, the same pass rule as ../shared/conformance/oci-validation (exit 0, an "ok", no "not ok").
set -u
ln -sf sandbox-runtime /opt/sandbox/sandbox-runtime-vm
rt=/opt/sandbox/sandbox-runtime-vm
only=${2:-.}
cd /opt/runtime-tools || exit 2
out=$(mktemp -d /tmp/tap.XXXXXX)
pass=0
fail=0
for t in validation/*/*.t; do
    n=$(basename "$t" .t)
    echo "$n" | grep -q -E "$only" || continue
    RUNTIME=$rt timeout 90 "$t" > "$out/$n.tap" 2>&1 < /dev/null
    rc=$?
    nok=$(grep -c '^not ok' "$out/$n.tap")
    ok=$(grep -c '^ok' "$out/$n.tap")
    if [ $rc = 0 ] && [ "$nok" = 0 ] && [ "$ok" -gt 0 ]; then pass=$((pass + 1)); s=PASS; else fail=$((fail + 1)); s=FAIL; fi
    printf '%s %-40s exit=%s ok=%s not-ok=%s\n' "$s" "$n" "$rc" "$ok" "$nok"
    if [ $s = FAIL ]; then { grep -m 3 "^not ok" "$out/$n.tap" || tail -n 4 "$out/$n.tap"; } | sed "s/^/    /"; fi
done
echo "$pass passed, $fail failed"
