"""The Loader's weight storage measured: memory of the loaded network, PSNR of a sampled clip vs the fp32 model (same
seed), and the eval's readers (colour, shape, direction) on the 12 held-out prompts, one clip each, same seeds.
Run with the ComfyUI venv after scripts/setup_comfy.sh: .comfy/venv/bin/python scripts/weight_dtypes.py"""
import asyncio, importlib.util, math, sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".comfy" / "ComfyUI"))
sys.path.insert(1, str(ROOT))
from comfy.cli_args import args
args.cpu = True
import torch
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location("lumiere_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
pack = importlib.util.module_from_spec(spec); sys.modules[spec.name] = pack; spec.loader.exec_module(pack)
asyncio.run(pack.comfy_entrypoint())
n = pack.nodes
path = str(ROOT / "models/lumiere/lumiere_demo_base.safetensors")
prompt = "a red circle moving left on black"
from lumiere.data.procedural import caption, eval_specs
from lumiere.metrics import adherence, analyse
def clip_of(model, clip, text=prompt, seed=7):
    enc = lambda t: clip.encode_from_tokens_scheduled(clip.tokenize(t))
    latent = {"samples": torch.zeros(1, 3, 16, 32, 32)}
    t0 = time.perf_counter()
    out = n.sampler.LumiereSampler.execute(model, enc(text), enc(""), latent, seed=seed, steps=25, cfg=5.0,
                                           sampler_name="ddim", scheduler="normal").args[0]["samples"]
    return out.clamp(-1, 1), time.perf_counter() - t0
def psnr(a, b):
    mse = ((a - b) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)
res = {}
clip = None
for wd in ["fp32", "bf16", "fp8_e4m3fn", "fp8_e5m2"]:
    model, config, state = n.comfy_model.load_model_patcher(path, wd)
    clip = clip or n.comfy_model.build_clip(path, config, state)
    mem = sum(p.numel() * p.element_size() for p in model.model.diffusion_model.parameters())
    out, sec = clip_of(model, clip)
    specs = eval_specs(1)
    reads = adherence([analyse(clip_of(model, clip, caption(**sp), seed=i)[0][0]) for i, sp in enumerate(specs)], specs)
    res[wd] = (mem, out, sec, model.model.manual_cast_dtype, reads)
ref = res["fp32"][1]
for wd, (mem, out, sec, mc, reads) in res.items():
    print(f"{wd:11s} weights {mem/2**20:6.2f} MiB ({mem/res['bf16'][0]:.2f}x bf16)  compute {mc or 'weights dtype'}  "
          f"PSNR vs fp32 {psnr(out, ref):6.2f} dB  vs bf16 {psnr(out, res['bf16'][1]):6.2f} dB  sample {sec:.1f} s  "
          f"held-out colour {reads['colour_acc']:.2f} shape {reads['shape_acc']:.2f} "
          f"direction {reads['direction_acc']:.2f} (n {reads['n']})")
