"""Each case in a fresh process: does a bad-input error raise on CUDA, or crash the process?"""
import subprocess, sys, shutil
CASES = {
 "rope_bwd_bad_order_autograd": "g=torch.randn(2,4,5,16,device='cuda'); k=torch.randn(2,2,5,16,device='cuda'); c=torch.randn(1,5,16,device='cuda'); torch.ops.liger.rope_bwd(g,k,c,c,1,[0,1,1,3],[])",
 "rope_bwd_bad_order_below_autograd": "g=torch.randn(2,4,5,16,device='cuda'); k=torch.randn(2,2,5,16,device='cuda'); c=torch.randn(1,5,16,device='cuda')\nwith torch._C._AutoDispatchBelowAutograd(): torch.ops.liger.rope_bwd(g,k,c,c,1,[0,1,1,3],[])",
 "rope_bad_cos_shape": "q=torch.randn(2,4,5,16,device='cuda'); k=torch.randn(2,2,5,16,device='cuda'); c=torch.randn(1,6,16,device='cuda'); torch.ops.liger.rope(q,k,c,c,1)",
 "rms_norm_bad_weight": "x=torch.randn(4,16,device='cuda'); w=torch.randn(8,device='cuda'); torch.ops.liger.rms_norm(x,w,1e-6,0.0,'llama')" ,
 "fused_add_mismatch": "x=torch.randn(33,3,64,device='cuda'); r=torch.randn(33,64,device='cuda'); torch.ops.liger.fused_add_rms_norm(x,r,None)",
 "cpu_rope_bwd_bad_order": "g=torch.randn(2,4,5,16); k=torch.randn(2,2,5,16); c=torch.randn(1,5,16); torch.ops.liger.rope_bwd(g,k,c,c,1,[0,1,1,3],[])",
 "torch_error_cuda": "torch.randn(3,device='cuda').view(2,2)",
}
for name, body in CASES.items():
    code = "import torch, liger_aot\ntry:\n    " + body.replace("\n", "\n    ") + "\n    print('no error')\nexcept Exception as e:\n    print('raised', type(e).__name__, str(e).splitlines()[0][:150])\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    print(f"{name}: rc={p.returncode} {p.stdout.strip()[:200]} {p.stderr.strip()[-300:] if p.returncode else ''}", flush=True)
    if p.returncode < 0 and shutil.which("gdb") and name.startswith("rope_bwd_bad_order_autograd"):
        open("/tmp/case.py", "w").write(code)
        g = subprocess.run(["gdb", "-q", "-batch", "-ex", "run", "-ex", "bt 40", "--args", sys.executable, "/tmp/case.py"],
                           capture_output=True, text=True, timeout=300)
        print("GDB:", g.stdout[-6000:], flush=True)
