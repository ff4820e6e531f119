/* GPT: GPT-2's architecture as a module tree made of the public module
 * calls, with the parameter names and layouts GPT-2's checkpoints use, and
 * a KV cache for generation.
 *
 *   GPT                          wte, wpe (Embedding), h (ModuleList), ln_f
 *     Block h.{i}                ln_1, attn, ln_2, mlp
 *       CausalSelfAttention      c_attn, c_proj (Conv1D)
 *       MLP                      c_fc, c_proj (Conv1D)
 *
 * Every forward below takes an optional per-layer cache; the module
 * classes' own forwards (xg_module_forward) pass none.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core_impl.h"
#include "gpt_impl.h"
#include "../ops/autocast_impl.h"

/* ---- Conv1D: y = x W + b, W [in, out] ------------------------------------ */

static xg_tensor *conv1d_forward(xg_module *m, xg_tensor *x)
{
    xg_tensor *w = xg_module_find_param(m, "weight");
    if (!w || !xg__check_float("Conv1D", 0, x))
        return NULL;
    int64_t in = w->shape[0], out = w->shape[1];
    if (x->ndim == 0 || x->shape[x->ndim - 1] != in) {
        char s[160];
        xg__shape_str(x->shape, x->ndim, s, sizeof s);
        xg_set_error(XG_ERR_SHAPE, "Conv1D: input %s, expected the last axis "
                     "to be %lld", s, (long long)in);
        return NULL;
    }
    /* one [N, in] x [in, out] GEMM over every position */
    int64_t rows_shape[2] = {x->numel / in, in};
    /* under autocast the matmul casts x and w itself (keeping no 16-bit
     * copy of w for the backward), and the bias is cast too: the sum in
     * the autocast dtype */
    xg_tensor *b = xg_module_find_param(m, "bias");
    xg_scope *cast = NULL;
    bool casting = xg__autocast(&b, 1, &cast);
    xg_tensor *y = xg_matmul(xg_reshape(x, rows_shape, 2), w);
    if (b)
        y = xg_add(y, b);
    int64_t shape[XG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim - 1] = out;
    y = y ? xg_reshape(y, shape, x->ndim) : NULL;
    return casting ? xg__composite_end(cast, y) : y;
}

static const xg_module_class conv1d_class = {.name = "Conv1D",
                                             .forward = conv1d_forward};

/* Adds a tensor of `shape` drawn from N(0, std), or zeros for std 0. */
static bool add_param(xg_module *m, const char *name, const int64_t *shape,
                      int ndim, float std)
{
    xg_tensor *t = std > 0 ? xg_rand_normal(shape, ndim, 0.0f, std)
                           : xg_zeros(shape, ndim);
    return xg_module_add_param(m, name, t) == XG_OK;
}

static xg_module *conv1d_new(int64_t in, int64_t out, bool bias, float std)
{
    xg_module *m = xg_module_new(&conv1d_class, NULL);
    int64_t wshape[2] = {in, out};
    if (m && add_param(m, "weight", wshape, 2, std) &&
        (!bias || add_param(m, "bias", &out, 1, 0.0f)))
        return m;
    xg_module_free(m);
    return NULL;
}

/* Re-draws an existing parameter from N(0, std). */
static bool renormal(xg_tensor *p, float std)
{
    xg_tensor *t = xg_rand_normal(p->shape, p->ndim, 0.0f, std);
    size_t bytes = (size_t)p->numel * sizeof(float);
    float *host = malloc(bytes);
    bool ok = t && host && xg_tensor_read(t, host, bytes) == XG_OK &&
              xg_tensor_write(p, host, bytes) == XG_OK;
    if (!host)
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "gpt: out of host memory");
    free(host);
    xg_tensor_free(t);
    return ok;
}

/* ---- the model's state and cache ------------------------------------------ */

typedef struct gpt_state {
    xg_gpt_config cfg;
} gpt_state;

/* A layer's cached keys and values [B, H, length, D] (NULL when empty),
 * and where the forward leaves the longer ones until the call succeeds. */
typedef struct layer_cache {
    xg_tensor *k, *v;
    xg_tensor *new_k, *new_v;
} layer_cache;

struct xg_gpt_cache {
    xg_module *gpt;
    int64_t batch, length;
    int n_layer;
    layer_cache *layers;
};

static const xg_module_class gpt_class;

/* The model a submodule belongs to carries the configuration; submodules
 * keep a pointer to it. */
typedef struct sub_state {
    const xg_gpt_config *cfg;
} sub_state;

static const xg_gpt_config *cfg_of(const xg_module *m)
{
    return ((const sub_state *)xg_module_state(m))->cfg;
}

static xg_module *sub_new(const xg_module_class *cls, const xg_gpt_config *cfg)
{
    sub_state *s = malloc(sizeof *s);
    if (!s) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "gpt: out of host memory");
        return NULL;
    }
    s->cfg = cfg;
    return xg_module_new(cls, s);
}

/* GPT-2 scales the init of the projections into the residual stream by
 * 1 / sqrt(2 n_layer): each block adds two of them. */
static float proj_std(const xg_gpt_config *cfg)
{
    return 0.02f / sqrtf(2.0f * (float)cfg->n_layer);
}

static xg_tensor *child(xg_module *m, const char *name, xg_tensor *x)
{
    return x ? xg_module_forward(xg_module_child(m, name), x) : NULL;
}

/* ---- attention ------------------------------------------------------------ */

static xg_tensor *attn_run(xg_module *m, xg_tensor *x, layer_cache *cache)
{
    const xg_gpt_config *cfg = cfg_of(m);
    int64_t b = x->shape[0], t = x->shape[1], c = cfg->n_embd;
    int64_t h = cfg->n_head, d = c / h;
    xg_tensor *qkv = child(m, "c_attn", x); /* [B, T, 3C] */
    int64_t split[5] = {b, t, 3, h, d};
    static const int perm[5] = {2, 0, 3, 1, 4}; /* [3, B, H, T, D] */
    qkv = xg_permute(xg_reshape(qkv, split, 5), perm, 5);
    xg_tensor *q = xg_select(qkv, 0, 0);
    xg_tensor *k = xg_select(qkv, 0, 1);
    xg_tensor *v = xg_select(qkv, 0, 2);
    xg_attention_params p = xg_attention_defaults();
    p.dropout_p = cfg->dropout;
    p.training = xg_module_training(m);
    if (cache) {
        if (cache->k) {
            p.causal_offset = cache->k->shape[2];
            k = xg_concat((xg_tensor *[]){cache->k, k}, 2, 2);
            v = xg_concat((xg_tensor *[]){cache->v, v}, 2, 2);
        }
        /* the first keys are views into the fused projection: copy them
         * out so the cache does not keep q alive */
        cache->new_k = cache->k ? k : xg_contiguous(k);
        cache->new_v = cache->k ? v : xg_contiguous(v);
        k = cache->new_k;
        v = cache->new_v;
    }
    xg_tensor *y = xg_attention(q, k, v, &p); /* [B, H, T, D] */
    int64_t merged[3] = {b, t, c};
    y = xg_reshape(xg_transpose(y, 1, 2), merged, 3);
    y = child(m, "c_proj", y);
    return y ? xg_dropout(y, cfg->dropout, xg_module_training(m)) : NULL;
}

static xg_tensor *attn_forward(xg_module *m, xg_tensor *x)
{
    return attn_run(m, x, NULL);
}

static const xg_module_class attn_class = {.name = "CausalSelfAttention",
                                           .forward = attn_forward,
                                           .free_state = free};

static xg_tensor *mlp_forward(xg_module *m, xg_tensor *x)
{
    const xg_gpt_config *cfg = cfg_of(m);
    xg_tensor *y = child(m, "c_proj", xg_gelu_tanh(child(m, "c_fc", x)));
    return y ? xg_dropout(y, cfg->dropout, xg_module_training(m)) : NULL;
}

static const xg_module_class mlp_class = {.name = "MLP",
                                          .forward = mlp_forward,
                                          .free_state = free};

/* x + attn(ln_1(x)), then + mlp(ln_2(.)): GPT-2's pre-norm block. */
static xg_tensor *block_run(xg_module *m, xg_tensor *x, layer_cache *cache)
{
    xg_tensor *a = child(m, "ln_1", x);
    a = a ? attn_run(xg_module_child(m, "attn"), a, cache) : NULL;
    x = a ? xg_add(x, a) : NULL;
    xg_tensor *f = child(m, "mlp", child(m, "ln_2", x));
    return f ? xg_add(x, f) : NULL;
}

static xg_tensor *block_forward(xg_module *m, xg_tensor *x)
{
    return block_run(m, x, NULL);
}

static const xg_module_class block_class = {.name = "Block",
                                            .forward = block_forward,
                                            .free_state = free};

/* ---- the model ------------------------------------------------------------ */

/* Logits [B, T, V] for ids [B, T] at positions start .. start + T - 1. */
static xg_tensor *gpt_run(xg_module *m, xg_tensor *ids, int64_t start,
                          layer_cache *cache)
{
    const xg_gpt_config *cfg = &((gpt_state *)xg_module_state(m))->cfg;
    if (!xg__check_arg("gpt", 0, ids, XG_I32))
        return NULL;
    if (ids->ndim != 2) {
        char s[160];
        xg__shape_str(ids->shape, ids->ndim, s, sizeof s);
        xg_set_error(XG_ERR_SHAPE, "gpt: token ids %s, expected [batch, "
                     "time]", s);
        return NULL;
    }
    int64_t b = ids->shape[0], t = ids->shape[1];
    if (start + t > cfg->context) {
        xg_set_error(XG_ERR_TOO_LARGE, "gpt: %lld positions, the model's "
                     "context is %lld", (long long)(start + t),
                     (long long)cfg->context);
        return NULL;
    }
    int32_t *pos = malloc((size_t)t * sizeof *pos);
    if (!pos) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "gpt: out of host memory");
        return NULL;
    }
    for (int64_t i = 0; i < t; i++)
        pos[i] = (int32_t)(start + i);
    xg_tensor *pos_ids = xg_tensor_from_data(pos, XG_I32, &t, 1);
    free(pos);
    xg_tensor *wte = xg_module_find_param(m, "wte.weight");
    xg_tensor *x = xg_add(child(m, "wte", ids), child(m, "wpe", pos_ids));
    x = x ? xg_dropout(x, cfg->dropout, xg_module_training(m)) : NULL;
    xg_module *h = xg_module_child(m, "h");
    for (int i = 0; x && i < cfg->n_layer; i++)
        x = block_run(xg_module_child_at(h, i, NULL), x,
                      cache ? &cache[i] : NULL);
    x = child(m, "ln_f", x);
    if (!x)
        return NULL;
    /* the output projection is the token embedding, transposed */
    int64_t rows[2] = {b * t, cfg->n_embd};
    int64_t out[3] = {b, t, cfg->vocab_size};
    return xg_reshape(xg_matmul_t(xg_reshape(x, rows, 2), wte, false, true),
                      out, 3);
}

static xg_tensor *gpt_forward(xg_module *m, xg_tensor *ids)
{
    return gpt_run(m, ids, 0, NULL);
}

static const xg_module_class gpt_class = {.name = "GPT",
                                          .forward = gpt_forward,
                                          .free_state = free};

xg_gpt_config xg_gpt_config_gpt2(void)
{
    return (xg_gpt_config){.vocab_size = 50257, .context = 1024,
                           .n_layer = 12, .n_head = 12, .n_embd = 768,
                           .dropout = 0.1f, .bias = true,
                           .layer_norm_eps = 1e-5f};
}

bool xg__gpt_config_ok(const xg_gpt_config *c)
{
    if (!c) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt: the configuration is NULL");
        return false;
    }
    if (c->vocab_size < 1 || c->context < 1 || c->n_layer < 1 ||
        c->n_head < 1 || c->n_embd < 1) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt: vocab_size %lld, context "
                     "%lld, n_layer %lld, n_head %lld, n_embd %lld: each "
                     "must be >= 1", (long long)c->vocab_size,
                     (long long)c->context, (long long)c->n_layer,
                     (long long)c->n_head, (long long)c->n_embd);
        return false;
    }
    if (c->n_embd % c->n_head) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt: n_embd %lld is not a multiple "
                     "of n_head %lld", (long long)c->n_embd,
                     (long long)c->n_head);
        return false;
    }
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f) ||
        !(c->layer_norm_eps >= 0.0f && isfinite(c->layer_norm_eps))) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt: dropout %g must be in [0, 1) "
                     "and layer_norm_eps %g finite and >= 0",
                     (double)c->dropout, (double)c->layer_norm_eps);
        return false;
    }
    /* the widest tensor, 4 embd wide, must stay far from int64 overflow */
    if (c->n_layer > 100000 || c->n_embd > ((int64_t)1 << 24) ||
        c->vocab_size > ((int64_t)1 << 31) - 1 ||
        c->context > ((int64_t)1 << 31) - 1) {
        xg_set_error(XG_ERR_TOO_LARGE, "gpt: a configuration this large "
                     "(%lld layers, %lld wide, vocab %lld, context %lld) is "
                     "refused", (long long)c->n_layer, (long long)c->n_embd,
                     (long long)c->vocab_size, (long long)c->context);
        return false;
    }
    return true;
}

/* Each xg_module_add_child consumes its child, also on error, and a NULL
 * child (a failed constructor) is an error: so a chain of adds needs no
 * cleanup but the parent's. */
/* `init` false: the Conv1D weights are zeros (see xg__gpt_blank). */
static xg_module *attn_new(const xg_gpt_config *cfg, bool init)
{
    int64_t c = cfg->n_embd;
    xg_module *m = sub_new(&attn_class, cfg);
    if (m && xg_module_add_child(m, "c_attn",
                                 conv1d_new(c, 3 * c, cfg->bias,
                                            init ? 0.02f : 0.0f)) == XG_OK &&
        xg_module_add_child(m, "c_proj",
                            conv1d_new(c, c, cfg->bias,
                                       init ? proj_std(cfg) : 0.0f)) == XG_OK)
        return m;
    xg_module_free(m);
    return NULL;
}

static xg_module *mlp_new(const xg_gpt_config *cfg, bool init)
{
    int64_t c = cfg->n_embd;
    xg_module *m = sub_new(&mlp_class, cfg);
    if (m && xg_module_add_child(m, "c_fc",
                                 conv1d_new(c, 4 * c, cfg->bias,
                                            init ? 0.02f : 0.0f)) == XG_OK &&
        xg_module_add_child(m, "c_proj",
                            conv1d_new(4 * c, c, cfg->bias,
                                       init ? proj_std(cfg) : 0.0f)) == XG_OK)
        return m;
    xg_module_free(m);
    return NULL;
}

static xg_module *layer_norm_new(const xg_gpt_config *cfg)
{
    return xg_layer_norm_layer(cfg->n_embd, cfg->layer_norm_eps, true,
                               cfg->bias);
}

static xg_module *block_new(const xg_gpt_config *cfg, bool init)
{
    xg_module *m = sub_new(&block_class, cfg);
    if (m && xg_module_add_child(m, "ln_1", layer_norm_new(cfg)) == XG_OK &&
        xg_module_add_child(m, "attn", attn_new(cfg, init)) == XG_OK &&
        xg_module_add_child(m, "ln_2", layer_norm_new(cfg)) == XG_OK &&
        xg_module_add_child(m, "mlp", mlp_new(cfg, init)) == XG_OK)
        return m;
    xg_module_free(m);
    return NULL;
}

static xg_module *gpt_new(const xg_gpt_config *config, bool init)
{
    if (!xg__gpt_config_ok(config))
        return NULL;
    gpt_state *s = malloc(sizeof *s);
    if (!s) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "gpt: out of host memory");
        return NULL;
    }
    s->cfg = *config;
    xg_module *m = xg_module_new(&gpt_class, s);
    if (!m)
        return NULL;
    const xg_gpt_config *cfg = &s->cfg;
    int64_t c = cfg->n_embd;
    xg_module *(*embedding)(int64_t, int64_t) =
        init ? xg_embedding_layer : xg__embedding_layer_zeros;
    bool ok =
        xg_module_add_child(m, "wte", embedding(cfg->vocab_size, c)) ==
            XG_OK &&
        xg_module_add_child(m, "wpe", embedding(cfg->context, c)) == XG_OK &&
        (!init ||
         (renormal(xg_module_find_param(m, "wte.weight"), 0.02f) &&
          renormal(xg_module_find_param(m, "wpe.weight"), 0.02f)));
    xg_module *h = ok ? xg_module_list() : NULL;
    ok = h && xg_module_add_child(m, "h", h) == XG_OK;
    for (int64_t i = 0; ok && i < cfg->n_layer; i++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)i);
        ok = xg_module_add_child(h, name, block_new(cfg, init)) == XG_OK;
    }
    ok = ok && xg_module_add_child(m, "ln_f", layer_norm_new(cfg)) == XG_OK;
    if (!ok) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

xg_module *xg_gpt(const xg_gpt_config *config)
{
    return gpt_new(config, true);
}

xg_module *xg__gpt_blank(const xg_gpt_config *config)
{
    return gpt_new(config, false);
}

bool xg_gpt_config_of(const xg_module *m, xg_gpt_config *config)
{
    if (!m || xg_module_class_of(m) != &gpt_class)
        return false;
    if (config)
        *config = ((const gpt_state *)xg_module_state(m))->cfg;
    return true;
}

/* The Conv1D weights (the matrices) take weight decay; biases, LayerNorm
 * weights and the embeddings do not. */
static bool decays(const char *name)
{
    size_t n = strlen(name);
    static const char *const suffix[] = {"c_attn.weight", "c_proj.weight",
                                         "c_fc.weight"};
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        size_t k = strlen(suffix[i]);
        if (n >= k && !strcmp(name + n - k, suffix[i]))
            return true;
    }
    return false;
}

xg_optim *xg_gpt_adamw(xg_module *gpt, const xg_adam_options *options)
{
    if (!xg_gpt_config_of(gpt, NULL)) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt_adamw: the module is not a "
                     "GPT");
        return NULL;
    }
    xg_adam_options o = options ? *options : xg_adamw_defaults();
    int n = xg_module_param_count(gpt), nd = 0, nn = 0;
    xg_tensor **decay = malloc(sizeof(xg_tensor *) * (size_t)n);
    xg_tensor **rest = malloc(sizeof(xg_tensor *) * (size_t)n);
    xg_optim *opt = NULL;
    if (!decay || !rest) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "gpt_adamw: out of host memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const char *name;
        xg_tensor *p = xg_module_param(gpt, i, &name);
        if (decays(name))
            decay[nd++] = p;
        else
            rest[nn++] = p;
    }
    opt = xg_optim_adamw(decay, nd, &o);
    if (opt && xg_optim_add_group(opt, rest, nn, 0.0f) != XG_OK) {
        xg_optim_free(opt);
        opt = NULL;
    }
done:
    free(decay);
    free(rest);
    return opt;
}

/* ---- KV cache -------------------------------------------------------------- */

xg_gpt_cache *xg_gpt_cache_new(xg_module *gpt, int64_t batch)
{
    xg_gpt_config cfg;
    if (!xg_gpt_config_of(gpt, &cfg) || batch < 1) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt_cache_new: %s",
                     batch < 1 ? "batch must be >= 1" : "not a GPT");
        return NULL;
    }
    xg_gpt_cache *c = calloc(1, sizeof *c);
    if (c)
        c->layers = calloc((size_t)cfg.n_layer, sizeof *c->layers);
    if (!c || !c->layers) {
        free(c);
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "gpt_cache_new: out of host "
                     "memory");
        return NULL;
    }
    c->gpt = gpt;
    c->batch = batch;
    c->n_layer = (int)cfg.n_layer;
    return c;
}

xg_tensor *xg_gpt_forward_cached(xg_gpt_cache *cache, xg_tensor *ids)
{
    if (!cache || !ids) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt_forward_cached: NULL %s",
                     cache ? "ids" : "cache");
        return NULL;
    }
    if (ids->ndim != 2 || ids->shape[0] != cache->batch) {
        char s[160];
        xg__shape_str(ids->shape, ids->ndim, s, sizeof s);
        xg_set_error(XG_ERR_SHAPE, "gpt_forward_cached: ids %s, expected "
                     "[%lld, t]", s, (long long)cache->batch);
        return NULL;
    }
    bool was_training = xg_module_training(cache->gpt);
    bool grad = xg_set_grad_enabled(false);
    if (was_training)
        xg_module_set_training(cache->gpt, false);
    xg_scope *scope = xg__composite_begin();
    xg_tensor *logits = gpt_run(cache->gpt, ids, cache->length, cache->layers);
    bool ok = logits != NULL;
    for (int i = 0; i < cache->n_layer; i++) {
        layer_cache *l = &cache->layers[i];
        if (ok) {
            xg_tensor_free(l->k);
            xg_tensor_free(l->v);
            l->k = xg_tensor_keep(l->new_k);
            l->v = xg_tensor_keep(l->new_v);
        }
        l->new_k = l->new_v = NULL;
    }
    if (ok)
        cache->length += ids->shape[1];
    logits = xg__composite_end(scope, logits);
    if (was_training)
        xg_module_set_training(cache->gpt, true);
    xg_set_grad_enabled(grad);
    return logits;
}

int64_t xg_gpt_cache_length(const xg_gpt_cache *cache)
{
    return cache ? cache->length : 0;
}

void xg_gpt_cache_reset(xg_gpt_cache *cache)
{
    if (!cache)
        return;
    for (int i = 0; i < cache->n_layer; i++) {
        xg_tensor_free(cache->layers[i].k);
        xg_tensor_free(cache->layers[i].v);
        cache->layers[i].k = cache->layers[i].v = NULL;
    }
    cache->length = 0;
}

void xg_gpt_cache_free(xg_gpt_cache *cache)
{
    if (!cache)
        return;
    xg_gpt_cache_reset(cache);
    free(cache->layers);
    free(cache);
}
