"""Lessons 09 and 10: a generative language model (SmolLM2-135M-Instruct) compressed and run on a CPU.

One module per job, each re-exported here so ``lu.llm.<name>`` reaches every helper:

- :mod:`.model`: fetch, convert once and cache the model; its decoder blocks and linears; token windows;
- :mod:`.evaluate`: :func:`perplexity` on fixed token windows, :func:`generate` (greedy), :func:`forward_ms`;
- :mod:`.footprint`: bytes of the weights at a storage format and of the KV cache (:func:`kv_cache_bytes`);
- :mod:`.rtn`: weight-only round-to-nearest (:func:`quantize_groupwise`, :func:`rtn_model_`);
- :mod:`.calibration`: statistics of every linear layer's inputs (:func:`calibrate`): Hessian ``XᵀX``, squared
  norms, per-channel maxima;
- :mod:`.gptq`: GPTQ (:func:`gptq_quantize`, :func:`gptq_model_`);
- :mod:`.awq`: AWQ: 1% salient channels (:func:`salient_channels`, :func:`full_precision_channels`), activation-aware
  scales searched per block and folded into the model, then clipping (:func:`awq_scales`, :func:`search_scale`,
  :func:`fold_scales_`, :func:`search_clip`, :func:`awq_model_`);
- :mod:`.activations`: simulated W8A8 (:func:`fake_quantize_activations`) and SmoothQuant
  (:func:`smooth_scales`, :func:`smoothquant_model_`);
- :mod:`.prune`: Wanda and magnitude masks including 2:4 (:func:`wanda_mask`, :func:`magnitude_mask`,
  :func:`prune_model_`);
- :mod:`.ort` (lesson 10): ONNX Runtime models built by onnxruntime-genai and cached (:func:`build_ort_llm`), the
  course's 4-bit weights packed into ``MatMulNBits`` (:func:`pack_int4`, :func:`ship_weights`), the runtime's
  logits for perplexity (:class:`OrtCausalLM`);
- :mod:`.serve` (lesson 10): prefill and decode timed alike for every runtime (:class:`TorchDecoder`,
  :class:`GenaiDecoder`, :func:`round_robin_decode`), memory bandwidth and the bound on decoding, the 4-bit
  products timed alone (:func:`product_rate`);
- :mod:`.kv` (lesson 10): a KIVI-style quantized KV cache (:func:`kivi_quantize`, :func:`kv_perplexity`,
  :func:`kivi_cache_bytes`);
- :mod:`.layers` (lesson 10): Block Influence layer dropping (:func:`block_influence`, :func:`drop_layers_`).

Written for Llama-style ``*ForCausalLM`` models of transformers. Units: bytes are bytes, perplexity is
exp(mean negative log-likelihood per predicted token, in nats).
"""

from . import activations, awq, calibration, evaluate, footprint, gptq, kv, layers, model, ort, prune, rtn, serve
from .activations import *  # noqa: F403
from .awq import *  # noqa: F403
from .calibration import *  # noqa: F403
from .evaluate import *  # noqa: F403
from .footprint import *  # noqa: F403
from .gptq import *  # noqa: F403
from .kv import *  # noqa: F403
from .layers import *  # noqa: F403
from .model import *  # noqa: F403
from .ort import *  # noqa: F403
from .prune import *  # noqa: F403
from .rtn import *  # noqa: F403
from .serve import *  # noqa: F403

__all__ = [*model.__all__, *evaluate.__all__, *footprint.__all__, *rtn.__all__, *calibration.__all__, *gptq.__all__,
           *awq.__all__, *activations.__all__, *prune.__all__, *ort.__all__, *serve.__all__, *kv.__all__,
           *layers.__all__]
