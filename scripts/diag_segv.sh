#!/usr/bin/env bash
# On the GPU box: toolchain facts and the native frames of a crash on an error path (see segv_backtrace.c).
set -u
c++ --version | head -1; ld --version | head -1
python3 -c "import torch; print(torch.__config__.show())" | grep -i -m3 "gcc\|c++\|cxx"
so=$(python3 -c "import liger_aot._library as l; print(l.library_path())")
readelf -S -W "$so" | grep -E "eh_frame|gcc_except|\.text" ; readelf -d "$so" | grep -i -E "flags|needed" | head -12
gcc -shared -fPIC -O0 scripts/segv_backtrace.c -o /tmp/segv.so -ldl
cat > /tmp/case.py <<'PY'
import torch, liger_aot
g = torch.randn(2, 4, 5, 16); k = torch.randn(2, 2, 5, 16); c = torch.randn(1, 5, 16)
try:
    torch.ops.liger.rope_bwd(g, k, c, c, 1, [0, 1, 1, 3], [])
except Exception as e:
    print("raised", type(e).__name__)
PY
LD_PRELOAD=/tmp/segv.so python3 /tmp/case.py 2> /tmp/segv.txt; echo "rc=$?"; head -40 /tmp/segv.txt
grep -o "[^ ]*\.so[^ ]* +0x[0-9a-f]*" /tmp/segv.txt | head -25 | while read -r mod off; do
  echo "$mod $off: $(addr2line -f -C -e "$mod" "${off#+}" 2>/dev/null | tr '\n' ' ')"; done
