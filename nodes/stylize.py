"""Stylized generation by weight interpolation (Lumiere Sec. 4.2), as ModelPatcher patches."""
from __future__ import annotations

from comfy_api.latest import io

from ..lumiere.checkpoint import load_model
from ..lumiere.models.stunet import STUNet
from ..lumiere.stylize import T2I_PREFIX, check_alpha, check_style_weights, t2i_state_dict
from .comfy_model import lumiere_net
from .loader import model_input, model_path
from .search import aliases


class LumiereStylize(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereStylize",
            **aliases("LumiereStylize"),
            display_name="Lumiere Stylize (weight interpolation)",
            category="Lumiere/model",
            description="W = alpha * W_style + (1 - alpha) * W_orig on the text-to-image weights only; the temporal "
                        "layers are untouched. Applied as core weight patches: no copy of the model, undone when "
                        "another MODEL is used, alpha = 0 is the original model exactly.",
            inputs=[
                io.Model.Input("model", tooltip="A Lumiere base MODEL from the Lumiere loader."),
                model_input("style_name", "A style checkpoint: a text-to-image U-Net fine-tuned on a style "
                                          "(or any Lumiere checkpoint with the same T2I architecture)."),
                io.Float.Input("alpha", default=0.7, min=0.0, max=1.0, step=0.05,
                               tooltip="0 = original model, 1 = the style's T2I weights (the paper uses 0.5-1)."),
            ],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model, style_name, alpha) -> io.NodeOutput:
        check_alpha(alpha)
        net = lumiere_net(model)
        style = t2i_state_dict(load_model(model_path(style_name, "style_name")).model)
        check_style_weights(t2i_state_dict(net), style)
        prefix = "diffusion_model.net." + (T2I_PREFIX if isinstance(net, STUNet) else "")
        m = model.clone()
        patches = {prefix + k: (v,) for k, v in style.items() if v.is_floating_point()}
        applied = m.add_patches(patches, strength_patch=alpha, strength_model=1.0 - alpha)
        if len(applied) != len(patches):  # keys the patcher did not find: the glue is out of date
            raise RuntimeError(f"style_name: only {len(applied)} of {len(patches)} T2I weights could be patched")
        return io.NodeOutput(m)


NODES = [LumiereStylize]
