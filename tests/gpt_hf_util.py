"""What tests/gpt_hf_torch.py and tests/gpt2_sample_torch.py share.

A GPT is bench/gpt_torch.py's (the same parameter names as transformers'
GPT2LMHeadModel's transformer); its sizes are passed as a tuple
dims = (vocab, positions, layers, heads, embd).
  random_gpt   a GPT with weights far from GPT-2's init, so that a layout
               mistake (a transposed Conv1D weight, say) moves the loss;
  hf_tensors   its tensors as a Hugging Face model.safetensors holds them:
               with or without the "transformer." prefix, with or without
               the attention mask buffers older transformers versions saved;
  loss64       the mean cross-entropy in float64 of a GPT holding a
               state_dict on rows of ids.
Import it after safetensors_torch (which exits 77 without torch).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import gpt_torch  # noqa: E402


def random_gpt(dims, seed, std):
    """The GPT of sizes dims from torch.manual_seed(seed): every weight
    N(0, std), LayerNorm weights 1 + N(0, std) and biases N(0, std)."""
    torch.manual_seed(seed)
    m = gpt_torch.GPT(*dims)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".ln_" in name or name.startswith("ln_f"):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + std * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return m


def hf_tensors(model, dims, prefix, masks, dtype=torch.float32):
    """model's state_dict in dtype, each name after prefix; with masks, also
    h.N.attn.bias (a [1, 1, positions, positions] lower triangle of ones)
    and h.N.attn.masked_bias (-1e4) for every layer N."""
    tensors = {prefix + k: v.to(dtype) for k, v in model.state_dict().items()}
    if masks:
        positions, layers = dims[1], dims[2]
        tril = torch.ones(positions, positions).tril().view(
            1, 1, positions, positions)
        for i in range(layers):
            tensors["%sh.%d.attn.bias" % (prefix, i)] = tril.to(dtype)
            tensors["%sh.%d.attn.masked_bias" % (prefix, i)] = \
                torch.tensor(-1e4).to(dtype)
    return tensors


def loss64(state, x, dims):
    """The mean cross-entropy in float64 of the GPT of sizes dims holding
    the state_dict `state`, predicting x[:, 1:] from x[:, :-1]."""
    m = gpt_torch.GPT(*dims)
    m.load_state_dict(state, strict=True)
    m = m.double().eval()
    with torch.no_grad():
        logits = m(x[:, :-1])
        return F.cross_entropy(logits.reshape(-1, dims[0]),
                               x[:, 1:].reshape(-1)).item()
