/* gpt: trains a GPT (GPT-2's architecture, xg_gpt) on text, byte by byte,
 * and generates text with it.
 *
 *   gpt                                  trains the default model on the
 *                                        fortunes corpus for 2000 steps
 *   gpt --steps 0 --load m.safetensors --generate 200 --prompt "Q: "
 *   gpt --load m.safetensors --steps 0 --eval FILE
 *
 * Flags (each "--flag VALUE" or "--flag=VALUE"; --help lists them):
 *   data      --data FILE[,FILE...] (the plain files of Debian's fortunes
 *             package by default), --val-fraction X (0.1: the last 10% of
 *             the tokens are the validation split)
 *   model     --layers 4 --heads 4 --embd 128 --context 128 --dropout 0
 *   training  --batch-size 16 --steps 2000 --lr 1e-3 --lr-schedule
 *             constant|cosine --warmup N --weight-decay 0.1 --grad-clip 1
 *             (0: off) --accumulate N (micro-batches per step) --seed N
 *             --precision f32|bf16|f16 (mixed precision: the forward pass
 *             and the loss, training and validation, under autocast;
 *             f16 adds a loss scaler, whose skipped steps still count as
 *             steps; checkpoints record the precision and the scaler)
 *   eval      --eval-every N (200) --eval-batches N (20): the validation
 *             loss, mean over N batches of random windows drawn the same
 *             way every time; --eval FILE: the loss on FILE's tokens cut
 *             into consecutive windows of context + 1 tokens stepping by
 *             context (the last partial window dropped), printed as
 *             eval_loss=
 *   files     --save PATH (the model, with its configuration as metadata),
 *             --load PATH (start from one; the configuration comes from
 *             the file), --checkpoint PATH (model, optimizer and progress
 *             at every evaluation and at the end), --resume PATH (continue
 *             from one exactly as the uninterrupted run), --log FILE.csv
 *   generate  --generate N tokens after training (or alone with --load
 *             and --steps 0), --prompt TEXT, --temperature X (1.0),
 *             --top-k K (0: all), --no-kv-cache (a full forward pass per
 *             token, for comparison)
 *   GPT-2     --init DIR starts from a folder as Hugging Face publishes
 *             GPT-2 (config.json, model.safetensors, vocab.json and
 *             merges.txt, or encoder.json and vocab.bpe): its model, and
 *             its BPE tokenizer for --data, --eval, --prompt and the
 *             output; --save then writes such a folder. --encode FILE
 *             prints FILE's token ids on one line and exits.
 *   LoRA      --lora r=8,alpha=16,dropout=0.05 trains low-rank adapters
 *             of the --lora-targets layers (c_attn; e.g. c_attn,c_proj,
 *             c_fc) with the rest frozen; --save-adapter DIR writes them
 *             in PEFT's format, --load-adapter DIR loads such a folder
 *             (xgrad's or PEFT's), --merge-to DIR writes the model with
 *             the adapters merged, as a folder --init reads.
 *   bench     --save-init PATH writes the initial model and --dump-batches
 *             PATH the training batches and the validation batches, for
 *             bench/gpt_torch.py curve
 *
 * The training batches are random windows of context + 1 tokens whose
 * starts are a pure function of (--seed, the micro-batch number), so a
 * resumed run draws what the uninterrupted one would have.
 *
 * The log (--log) is a CSV file with the header
 *   kind,step,loss,lr,tokens_per_s,elapsed_s,val_loss
 * train rows every --log-every steps (20) and at the end: loss (mean
 * training loss over the steps since the previous row), lr, tokens_per_s
 * (training tokens over training time since the previous row), elapsed_s;
 * eval rows at step 0 (a run not resumed) and at every evaluation with
 * val_loss. Under --resume the log
 * continues as the other samples' do.
 *
 * Output: a header, a line per evaluation, then the last line
 *   result: backend=cpu model=gpt params=N steps=N train_loss=X
 *   val_loss=X tokens_per_s=N [eval_loss=X] [gen_tokens_per_s=N]
 * Progress (loss and tokens/s) goes to stderr: a bar on a terminal, a line
 * every tenth of the run otherwise. Exit status 0, 1 on an error, 2 on bad
 * flags.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sample_common.h"
#include "sample_log.h"
#include "xgrad.h"
#include "xgrad_data.h"

#define PROG "gpt"
#define LOG_HEADER "kind,step,loss,lr,tokens_per_s,elapsed_s,val_loss"

typedef struct options {
    const char *data;
    double val_fraction;
    xg_gpt_config cfg;
    int64_t batch_size, steps, accumulate, warmup;
    double lr, weight_decay, grad_clip;
    bool cosine;
    int64_t eval_every, eval_batches, log_every;
    uint64_t seed;
    const char *save, *load, *checkpoint, *resume, *log, *eval_file;
    const char *save_init, *dump_batches;
    int64_t generate, top_k;
    const char *prompt;
    double temperature;
    bool no_kv_cache;
    bool dropout_given, context_given;
    const char *precision; /* "f32", "bf16" or "f16" */
    /* pretrained GPT-2 (Hugging Face folders) and LoRA */
    const char *init, *encode;
    bool lora;
    xg_lora_config lora_cfg;
    const char *lora_targets; /* comma-separated, or NULL: c_attn */
    const char *save_adapter, *load_adapter, *merge_to;
} options;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int lib_fail(const char *what)
{
    fprintf(stderr, PROG ": %s: %s\n", what, xg_last_error());
    return 1;
}

/* ===== Flags ============================================================= */

/* The shared flag helpers (sample_common.c) report under this name. */
#define bad sample_bad_value
#define parse_i64 sample_parse_int

static int parse_f64(const char *flag, const char *s, double min, double max,
                     bool max_open, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !(v >= min) ||
        (max_open ? !(v < max) : !(v <= max))) {
        char want[96];
        snprintf(want, sizeof want, "a number from %g to %g%s", min, max,
                 max_open ? " (excluded)" : "");
        return bad(flag, s, want);
    }
    *out = v;
    return 0;
}

static const struct {
    const char *name, *arg, *help;
} flag_help[] = {
    {"--data", "FILE[,FILE...]", "text files (default: the fortunes files)"},
    {"--val-fraction", "X", "the last X of the tokens validate (0.1)"},
    {"--layers", "N", "transformer blocks (4)"},
    {"--heads", "N", "attention heads (4)"},
    {"--embd", "N", "embedding width, a multiple of --heads (128)"},
    {"--context", "N", "tokens per window (128)"},
    {"--dropout", "X", "dropout probability (0)"},
    {"--batch-size", "N", "windows per micro-batch (16)"},
    {"--steps", "N", "optimizer steps (2000)"},
    {"--accumulate", "N", "micro-batches per step (1)"},
    {"--lr", "X", "learning rate (1e-3)"},
    {"--lr-schedule", "NAME", "constant or cosine (constant)"},
    {"--warmup", "N", "cosine: steps of linear warmup (0)"},
    {"--weight-decay", "X", "AdamW's, on the matrices only (0.1)"},
    {"--grad-clip", "X", "clip the gradients' norm to X; 0: off (1)"},
    {"--eval-every", "N", "steps between validations (200)"},
    {"--eval-batches", "N", "batches per validation (20)"},
    {"--seed", "N", "initialisation, batches and sampling (0)"},
    {"--precision", "NAME", "f32, or mixed: bf16 or f16 (f32)"},
    {"--save", "PATH", "write the trained model (a folder with --init)"},
    {"--load", "PATH", "start from a saved model"},
    {"--checkpoint", "PATH", "model + optimizer at every validation"},
    {"--resume", "PATH", "continue from a checkpoint"},
    {"--log", "FILE.csv", "training log"},
    {"--log-every", "N", "steps per train row of the log (20)"},
    {"--eval", "FILE", "the loss on FILE's consecutive windows"},
    {"--generate", "N", "generate N tokens at the end (0)"},
    {"--prompt", "TEXT", "what generation continues (a newline)"},
    {"--temperature", "X", "sampling temperature (1)"},
    {"--top-k", "K", "sample among the K likeliest tokens; 0: all (0)"},
    {"--no-kv-cache", NULL, "generate with a full forward pass per token"},
    {"--init", "DIR", "start from a GPT-2 folder (Hugging Face layout)"},
    {"--encode", "FILE", "print FILE's token ids and exit"},
    {"--lora", "SPEC", "train LoRA adapters only; SPEC r=8,alpha=16,\n"
     "                             dropout=0.05 (any part; alpha 2 r)"},
    {"--lora-targets", "LIST", "layers LoRA adapts (c_attn)"},
    {"--save-adapter", "DIR", "write the adapters in PEFT's format"},
    {"--load-adapter", "DIR", "load adapters (xgrad's or PEFT's)"},
    {"--merge-to", "DIR", "merge the adapters, write a GPT-2 folder"},
    {"--save-init", "PATH", "write the initial model (for comparisons)"},
    {"--dump-batches", "PATH", "write the batches (for comparisons)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " [flags]\n"
               "Trains a GPT on text files (byte by byte, or from a GPT-2 "
               "folder with its\ntokenizer), then evaluates and generates.\n");
    for (size_t i = 0; i < sizeof flag_help / sizeof *flag_help; i++) {
        char left[48];
        snprintf(left, sizeof left, "%s%s%s", flag_help[i].name,
                 flag_help[i].arg ? " " : "",
                 flag_help[i].arg ? flag_help[i].arg : "");
        fprintf(f, "  %-26s %s\n", left, flag_help[i].help);
    }
    fprintf(f, "  %-26s %s\n", "--help", "this text");
}

/* --lora r=N,alpha=X,dropout=X (each optional: r 8, alpha 2 r, dropout
 * 0.05); returns 0 or 2. */
static int parse_lora(options *o, const char *v)
{
    o->lora = true;
    o->lora_cfg.r = 8;
    o->lora_cfg.alpha = -1.0f;
    o->lora_cfg.dropout = 0.05f;
    const char *p = v;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char item[64];
        if (n >= sizeof item)
            return bad("--lora", v, "r=N,alpha=X,dropout=X");
        memcpy(item, p, n);
        item[n] = '\0';
        char *val = strchr(item, '=');
        if (!val)
            return bad("--lora", v, "r=N,alpha=X,dropout=X");
        *val++ = '\0';
        int64_t i;
        double d;
        if (!strcmp(item, "r")) {
            if (parse_i64("--lora r", val, 1, 1 << 16, &i))
                return 2;
            o->lora_cfg.r = (int)i;
        } else if (!strcmp(item, "alpha")) {
            if (parse_f64("--lora alpha", val, 0.0, 1e6, false, &d))
                return 2;
            o->lora_cfg.alpha = (float)d;
        } else if (!strcmp(item, "dropout")) {
            if (parse_f64("--lora dropout", val, 0.0, 1.0, true, &d))
                return 2;
            o->lora_cfg.dropout = (float)d;
        } else {
            return bad("--lora", v, "keys r, alpha and dropout");
        }
        p += n + (end ? 1 : 0);
    }
    if (o->lora_cfg.alpha < 0)
        o->lora_cfg.alpha = 2.0f * (float)o->lora_cfg.r;
    return 0;
}

/* Sets one flag; returns 0 or 2. */
static int set_flag(options *o, const char *name, const char *v)
{
    int64_t i;
    double d;
    int rc = 0;
#define INT(flag, lo, hi, dst)                                               \
    if (!strcmp(name, flag))                                                 \
        return (rc = parse_i64(flag, v, lo, hi, &i)) ? rc : ((dst) = i, 0);
#define NUM(flag, lo, hi, open, dst)                                         \
    if (!strcmp(name, flag))                                                 \
        return (rc = parse_f64(flag, v, lo, hi, open, &d)) ? rc              \
                                                           : ((dst) = d, 0);
#define STR(flag, dst)                                                       \
    if (!strcmp(name, flag))                                                 \
        return *v ? ((dst) = v, 0) : bad(flag, v, "a non-empty value");
    STR("--data", o->data)
    NUM("--val-fraction", 0.0, 1.0, true, o->val_fraction)
    INT("--layers", 1, 1000, o->cfg.n_layer)
    INT("--heads", 1, 4096, o->cfg.n_head)
    INT("--embd", 1, 1 << 16, o->cfg.n_embd)
    if (!strcmp(name, "--context"))
        o->context_given = true;
    INT("--context", 1, 1 << 20, o->cfg.context)
    if (!strcmp(name, "--dropout"))
        o->dropout_given = true;
    NUM("--dropout", 0.0, 1.0, true, o->cfg.dropout)
    INT("--batch-size", 1, 1 << 20, o->batch_size)
    INT("--steps", 0, (int64_t)1 << 40, o->steps)
    INT("--accumulate", 1, 1 << 20, o->accumulate)
    NUM("--lr", 0.0, 10.0, false, o->lr)
    INT("--warmup", 0, (int64_t)1 << 40, o->warmup)
    NUM("--weight-decay", 0.0, 10.0, false, o->weight_decay)
    NUM("--grad-clip", 0.0, 1e30, false, o->grad_clip)
    INT("--eval-every", 1, (int64_t)1 << 40, o->eval_every)
    INT("--eval-batches", 1, 1 << 20, o->eval_batches)
    INT("--log-every", 1, (int64_t)1 << 40, o->log_every)
    STR("--save", o->save)
    STR("--load", o->load)
    STR("--checkpoint", o->checkpoint)
    STR("--resume", o->resume)
    STR("--log", o->log)
    STR("--eval", o->eval_file)
    INT("--generate", 0, 1 << 30, o->generate)
    NUM("--temperature", 1e-6, 1e6, false, o->temperature)
    INT("--top-k", 0, 1 << 30, o->top_k)
    STR("--save-init", o->save_init)
    STR("--init", o->init)
    STR("--encode", o->encode)
    STR("--lora-targets", o->lora_targets)
    STR("--save-adapter", o->save_adapter)
    STR("--load-adapter", o->load_adapter)
    STR("--merge-to", o->merge_to)
    STR("--dump-batches", o->dump_batches)
#undef INT
#undef NUM
#undef STR
    if (!strcmp(name, "--lora"))
        return parse_lora(o, v);
    if (!strcmp(name, "--precision"))
        return sample_parse_precision(v, &o->precision);
    if (!strcmp(name, "--prompt")) {
        o->prompt = v;
        return 0;
    }
    if (!strcmp(name, "--lr-schedule")) {
        if (strcmp(v, "constant") && strcmp(v, "cosine"))
            return bad(name, v, "constant or cosine");
        o->cosine = !strcmp(v, "cosine");
        return 0;
    }
    if (!strcmp(name, "--seed")) {
        char *end = NULL;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (v[0] < '0' || v[0] > '9' || *end || errno == ERANGE)
            return bad(name, v, "an integer from 0 to 2^64-1");
        o->seed = s;
        return 0;
    }
    fprintf(stderr, PROG ": unknown flag %s (see --help)\n", name);
    return 2;
}

static int parse(options *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--no-kv-cache")) {
            o->no_kv_cache = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, PROG ": unexpected argument '%s' (see --help)\n",
                    a);
            return 2;
        }
        char name[64];
        const char *eq = strchr(a, '='), *value;
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
            value = eq + 1;
        } else {
            if (i + 1 >= argc) {
                fprintf(stderr, PROG ": %s needs a value (see --help)\n", a);
                return 2;
            }
            snprintf(name, sizeof name, "%s", a);
            value = argv[++i];
        }
        int rc = set_flag(o, name, value);
        if (rc)
            return rc;
    }
    if (o->cfg.n_embd % o->cfg.n_head) {
        fprintf(stderr, PROG ": --embd %lld is not a multiple of --heads "
                "%lld\n", (long long)o->cfg.n_embd,
                (long long)o->cfg.n_head);
        return 2;
    }
    if (o->warmup && !o->cosine) {
        fprintf(stderr, PROG ": --warmup needs --lr-schedule cosine\n");
        return 2;
    }
    if (o->load && o->resume) {
        fprintf(stderr, PROG ": --load and --resume exclude each other\n");
        return 2;
    }
    if (o->init && o->load) {
        fprintf(stderr, PROG ": --init and --load exclude each other (--init "
                "takes a folder, --load a file of this sample)\n");
        return 2;
    }
    if ((o->save_adapter || o->merge_to) && !o->lora && !o->load_adapter) {
        fprintf(stderr, PROG ": --save-adapter and --merge-to need adapters: "
                "--lora or --load-adapter\n");
        return 2;
    }
    if (o->lora && o->load_adapter) {
        fprintf(stderr, PROG ": --lora and --load-adapter exclude each other "
                "(a loaded adapter brings its own configuration)\n");
        return 2;
    }
    if ((o->lora || o->load_adapter) && o->save) {
        fprintf(stderr, PROG ": --save with adapters: write them with "
                "--save-adapter DIR, or the merged model with --merge-to "
                "DIR\n");
        return 2;
    }
    if (o->lora_targets && !o->lora) {
        fprintf(stderr, PROG ": --lora-targets needs --lora\n");
        return 2;
    }
    if (o->dump_batches && o->accumulate != 1) {
        fprintf(stderr, PROG ": --dump-batches needs --accumulate 1\n");
        return 2;
    }
    return 0;
}

/* ===== Data ============================================================== */

/* Token streams of text files: byte tokens, or GPT-2's BPE (bpe). */
static xg_status text_load(const xg_bpe *bpe, const char *const *paths,
                           int64_t n, xg_text **out)
{
    return bpe ? xg_text_load_bpe(bpe, paths, n, out)
               : xg_text_load(paths, n, out);
}

/* --data: the comma-separated list, or the fortunes files. */
static int load_data(const options *o, const xg_bpe *bpe, xg_text **out)
{
    char **paths = NULL;
    int n = 0;
    xg_status st;
    if (o->data) {
        char *copy = strdup(o->data);
        for (char *p = copy; p; p = strchr(p, ',')) {
            if (*p == ',')
                *p++ = '\0';
            n++;
        }
        paths = calloc((size_t)n, sizeof *paths);
        if (!copy || !paths) {
            fprintf(stderr, PROG ": out of memory\n");
            free(copy);
            free(paths);
            return 1;
        }
        const char *p = copy;
        for (int i = 0; i < n; i++, p += strlen(p) + 1) {
            if (!*p) {
                fprintf(stderr, PROG ": --data '%s': an empty file name\n",
                        o->data);
                free(copy);
                free(paths);
                return 2;
            }
            paths[i] = (char *)p;
        }
        st = text_load(bpe, (const char *const *)paths, n, out);
        free(copy);
        free(paths);
    } else {
        xg_path_list list = {0};
        st = xg_fortunes_list(NULL, &list);
        if (st == XG_OK)
            st = text_load(bpe, list.paths, list.count, out);
        xg_path_list_free(&list);
    }
    if (st != XG_OK)
        return lib_fail("--data");
    st = xg_text_set_val_fraction(*out, o->val_fraction);
    if (st != XG_OK) {
        xg_text_free(*out);
        *out = NULL;
        return lib_fail("--val-fraction");
    }
    return 0;
}

/* ===== The run =========================================================== */

typedef struct run {
    options o;
    xg_bpe *bpe;        /* --init's tokenizer; NULL: byte tokens */
    char *targets_text; /* --lora-targets, cut into targets */
    const char *targets[32];
    xg_text *text;
    xg_text *eval_text; /* --eval's file */
    xg_module *model;
    xg_gpt_config cfg;
    xg_optim *opt;
    xg_dtype autocast;       /* --precision: XG_F32 (off), XG_BF16, XG_F16 */
    xg_grad_scaler *scaler;  /* under f16; else NULL */
    int64_t skipped;         /* steps it skipped in this run */
    xg_grad_sync *sync;  /* averages gradients over the ranks */
    xg_tensor **params;
    int n_params;
    int64_t n_weights;   /* parameter elements */
    int64_t n_trained;   /* of those, not frozen */
    int64_t window;      /* tokens per training and evaluation window */
    int64_t ckpt_window; /* --resume's, -1 when unknown */
    int64_t step;        /* optimizer steps done */
    bool tty;
    sample_log *log;
    double train_time;   /* seconds spent in training steps */
    double start;
    double last_train_loss, last_val_loss;
    /* the log's window since its last train row */
    double win_loss, win_time;
    int64_t win_steps;
} run;

/* Micro-batch k of the training split, or batch k of the validation one:
 * x, y [batch, context] token ids. Data-parallel, the batch is the global
 * one of batch x ranks rows, and each rank takes its own batch rows. */
static int get_batch(run *r, bool val, uint64_t k, xg_tensor **x,
                     xg_tensor **y)
{
    uint64_t seed = val ? r->o.seed ^ 0x5eedba11ull : r->o.seed;
    int64_t b = r->o.batch_size;
    if (xg_text_batch_rows(r->text, val ? XG_TEXT_VAL : XG_TEXT_TRAIN,
                           b * xg_dist_world_size(), r->window, seed, k,
                           b * xg_dist_rank(), b, x, y) != XG_OK)
        return lib_fail("batch");
    return 0;
}

/* The mean cross-entropy of the model on ids x with targets y. */
static xg_tensor *loss_of(run *r, xg_tensor *x, xg_tensor *y)
{
    xg_dtype was = xg_set_autocast(r->autocast); /* --precision */
    xg_tensor *logits = xg_module_forward(r->model, x);
    int64_t rows[2] = {xg_tensor_numel(y), r->cfg.vocab_size};
    int64_t flat[1] = {xg_tensor_numel(y)};
    xg_tensor *loss = logits ? xg_cross_entropy(xg_reshape(logits, rows, 2),
                                                xg_reshape(y, flat, 1))
                             : NULL;
    xg_set_autocast(was);
    return loss;
}

/* The step after the backward passes: unscaled (f16), clipped, the
 * optimizer's update (which the scaler skips on inf/NaN gradients). */
static xg_status optimizer_step(run *r)
{
    xg_grad_scaler *sc = r->scaler;
    xg_status st = XG_OK;
    if (sc && r->o.grad_clip > 0)
        st = xg_grad_scaler_unscale(sc, r->opt);
    if (st == XG_OK && r->o.grad_clip > 0)
        st = xg_clip_grad_norm(r->params, r->n_params, (float)r->o.grad_clip,
                               NULL);
    bool stepped = true;
    if (st == XG_OK)
        st = sc ? xg_grad_scaler_step(sc, r->opt, &stepped)
                : xg_optim_step(r->opt);
    r->skipped += st == XG_OK && !stepped;
    return st == XG_OK && sc ? xg_grad_scaler_update(sc) : st;
}

/* The validation loss: the mean over --eval-batches fixed batches. */
static int validate(run *r, double *out)
{
    bool grad = xg_set_grad_enabled(false);
    xg_module_set_training(r->model, false);
    double sum = 0;
    int rc = 0;
    for (int64_t k = 0; k < r->o.eval_batches && !rc; k++) {
        xg_scope *s = xg_scope_begin();
        xg_tensor *x, *y;
        float v;
        rc = get_batch(r, true, (uint64_t)k, &x, &y);
        xg_tensor *loss = rc ? NULL : loss_of(r, x, y);
        if (!rc && (!loss || xg_tensor_item(loss, &v) != XG_OK))
            rc = lib_fail("validation");
        sum += rc ? 0 : v;
        xg_scope_end(s);
    }
    xg_module_set_training(r->model, true);
    xg_set_grad_enabled(grad);
    if (!rc && xg_dist_sum(&sum, 1) != XG_OK) /* over the ranks' rows */
        rc = lib_fail("validation");
    *out = sum / (double)r->o.eval_batches / xg_dist_world_size();
    return rc;
}

static double lr_at(const run *r, int64_t step)
{
    if (!r->o.cosine)
        return r->o.lr;
    return xg_lr_cosine((float)r->o.lr, step, r->o.warmup, r->o.steps, 0.0f);
}

/* One optimizer step over --accumulate micro-batches; *loss gets their
 * mean loss. */
static int train_step(run *r, double *loss)
{
    xg_optim_set_lr(r->opt, (float)lr_at(r, r->step));
    xg_optim_zero_grad(r->opt);
    double sum = 0;
    for (int64_t a = 0; a < r->o.accumulate; a++) {
        xg_scope *s = xg_scope_begin();
        xg_tensor *x, *y;
        float v;
        uint64_t k = (uint64_t)(r->step * r->o.accumulate + a);
        if (get_batch(r, false, k, &x, &y)) {
            xg_scope_end(s);
            return 1;
        }
        xg_tensor *l = loss_of(r, x, y);
        /* each micro-batch adds its share of the step's mean gradient */
        xg_tensor *scaled = r->o.accumulate > 1
                                ? xg_div_scalar(l, (float)r->o.accumulate)
                                : l;
        if (r->scaler) /* f16: the loss scale too */
            scaled = xg_grad_scaler_scale(r->scaler, scaled);
        /* the last micro-batch's backward averages over the ranks; the
         * graph goes as the backward walks: nothing here reuses it */
        xg_status st = !scaled ? xg_last_status()
                       : a + 1 < r->o.accumulate
                           ? xg_backward_ex(scaled, false)
                           : xg_grad_sync_backward(r->sync, scaled);
        if (st != XG_OK || xg_tensor_item(l, &v) != XG_OK) {
            xg_scope_end(s);
            return lib_fail("training step");
        }
        sum += v;
        xg_scope_end(s);
    }
    if (xg_dist_sum(&sum, 1) != XG_OK) /* the step's loss over all ranks */
        return lib_fail("training step");
    sum /= xg_dist_world_size();
    if (optimizer_step(r) != XG_OK)
        return lib_fail("optimizer step");
    r->step++;
    *loss = sum / (double)r->o.accumulate;
    return 0;
}

/* ===== Model files ======================================================= */

/* The configuration as __metadata__ pairs (key, value, ..., NULL), in
 * `buf`; extra pairs (NULL-ended) follow. */
typedef struct meta {
    char text[16][32];
    const char *kv[40];
} meta;

static const char *const cfg_keys[] = {
    "gpt.vocab_size", "gpt.context", "gpt.n_layer", "gpt.n_head",
    "gpt.n_embd", "gpt.dropout", "gpt.bias", "gpt.layer_norm_eps"};

static void make_meta(const run *r, meta *m, bool train)
{
    const xg_gpt_config *c = &r->cfg;
    int n = 0, t = 0;
#define PAIR(key, ...)                                                       \
    do {                                                                     \
        snprintf(m->text[t], sizeof m->text[t], __VA_ARGS__);                \
        m->kv[n++] = key;                                                    \
        m->kv[n++] = m->text[t++];                                           \
    } while (0)
    PAIR(cfg_keys[0], "%lld", (long long)c->vocab_size);
    PAIR(cfg_keys[1], "%lld", (long long)c->context);
    PAIR(cfg_keys[2], "%lld", (long long)c->n_layer);
    PAIR(cfg_keys[3], "%lld", (long long)c->n_head);
    PAIR(cfg_keys[4], "%lld", (long long)c->n_embd);
    PAIR(cfg_keys[5], "%.9g", (double)c->dropout);
    PAIR(cfg_keys[6], "%d", c->bias ? 1 : 0);
    PAIR(cfg_keys[7], "%.9g", (double)c->layer_norm_eps);
    m->kv[n++] = "tokenizer";
    m->kv[n++] = r->bpe ? "bpe" : "bytes";
    if (train) {
        PAIR("train.seed", "%llu", (unsigned long long)r->o.seed);
        PAIR("train.batch_size", "%lld", (long long)r->o.batch_size);
        PAIR("train.accumulate", "%lld", (long long)r->o.accumulate);
        PAIR("train.window", "%lld", (long long)r->window);
        PAIR("train.world_size", "%d", xg_dist_world_size());
        PAIR("train.precision", "%s", r->o.precision);
    }
#undef PAIR
    m->kv[n] = NULL;
}

/* Reads the configuration a model file or checkpoint was saved with; with
 * `train`, also checks that the run's batches are the checkpoint's. */
static int read_meta(run *r, const char *flag, const char *path, bool train)
{
    xg_safetensors *st;
    if (xg_safetensors_open(path, &st) != XG_OK) {
        fprintf(stderr, PROG ": %s %s: %s\n", flag, path, xg_last_error());
        return 1;
    }
    double v[8];
    int rc = 0;
    for (int i = 0; i < 8 && !rc; i++) {
        const char *s = xg_safetensors_metadata(st, cfg_keys[i]);
        char *end = NULL;
        if (!s || (v[i] = strtod(s, &end), end == s || *end)) {
            fprintf(stderr, PROG ": %s %s: not a gpt model file (%s %s in "
                    "its metadata)\n", flag, path, cfg_keys[i],
                    s ? "is malformed" : "is missing");
            rc = 1;
        }
    }
    if (!rc) {
        r->cfg = (xg_gpt_config){
            .vocab_size = (int64_t)v[0], .context = (int64_t)v[1],
            .n_layer = (int64_t)v[2], .n_head = (int64_t)v[3],
            .n_embd = (int64_t)v[4], .dropout = (float)v[5],
            .bias = v[6] != 0, .layer_norm_eps = (float)v[7]};
        const char *tok = xg_safetensors_metadata(st, "tokenizer");
        const char *want = r->bpe ? "bpe" : "bytes";
        if (!tok || strcmp(tok, want)) {
            fprintf(stderr, PROG ": %s %s: made with %s tokens, this run "
                    "has %s%s\n", flag, path, tok ? tok : "unknown", want,
                    r->bpe ? "" : " (give the --init folder it started from)");
            rc = 1;
        } else if (!r->bpe && r->cfg.vocab_size != 256) {
            fprintf(stderr, PROG ": %s %s: a vocabulary of %lld tokens; byte "
                    "tokens are 256\n", flag, path,
                    (long long)r->cfg.vocab_size);
            rc = 1;
        }
    }
    if (!rc && train) {
        const char *w = xg_safetensors_metadata(st, "train.window");
        r->ckpt_window = w ? strtoll(w, NULL, 10) : -1;
        char want[5][32];
        snprintf(want[0], 32, "%llu", (unsigned long long)r->o.seed);
        snprintf(want[1], 32, "%lld", (long long)r->o.batch_size);
        snprintf(want[2], 32, "%lld", (long long)r->o.accumulate);
        snprintf(want[3], 32, "%d", xg_dist_world_size());
        snprintf(want[4], 32, "%s", r->o.precision);
        const char *key[5] = {"train.seed", "train.batch_size",
                              "train.accumulate", "train.world_size",
                              "train.precision"};
        const char *name[5] = {"--seed", "--batch-size", "--accumulate",
                               "ranks (mpirun -np)", "--precision"};
        for (int i = 0; i < 5 && !rc; i++) {
            const char *s = xg_safetensors_metadata(st, key[i]);
            if (!s && i == 3) /* from before data-parallel runs */
                s = "1";
            if (!s && i == 4) /* from before --precision */
                s = "f32";
            if (!s || strcmp(s, want[i])) {
                fprintf(stderr, PROG ": --resume %s: the checkpoint was "
                        "made with %s %s, this run has %s: give the same "
                        "value to continue it exactly\n", path, name[i],
                        s ? s : "(unknown)", want[i]);
                rc = 1;
            }
        }
    }
    xg_safetensors_close(st);
    return rc;
}

/* Copies the tokenizer's two files from the --init folder into dir. */
static int copy_tokenizer(const run *r, const char *flag, const char *dir)
{
    static const char *const names[2][2] = {{"vocab.json", "merges.txt"},
                                            {"encoder.json", "vocab.bpe"}};
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/vocab.json", r->o.init);
    int pair = access(src, F_OK) == 0 ? 0 : 1;
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/%s", r->o.init, names[pair][i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, names[pair][i]);
        FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
        char buf[65536];
        size_t got;
        int bad = !in || !out;
        while (!bad && (got = fread(buf, 1, sizeof buf, in)) > 0)
            bad = fwrite(buf, 1, got, out) != got;
        bad |= in && ferror(in);
        if (in)
            fclose(in);
        if (out && fclose(out))
            bad = 1;
        if (bad) {
            fprintf(stderr, PROG ": %s %s: copying %s: %s\n", flag, dir, src,
                    strerror(errno));
            return 1;
        }
    }
    return 0;
}

/* A GPT-2 folder (config.json, model.safetensors and the tokenizer) for
 * a model from --init, else a safetensors file with the configuration. */
static int save_model(run *r, const char *path)
{
    if (r->o.init) {
        if (xg_gpt_save_hf(r->model, path) != XG_OK) {
            fprintf(stderr, PROG ": saving %s: %s\n", path, xg_last_error());
            return 1;
        }
        return copy_tokenizer(r, "saving", path);
    }
    meta m;
    make_meta(r, &m, false);
    if (xg_module_save_with(r->model, path, m.kv) != XG_OK) {
        fprintf(stderr, PROG ": --save %s: %s\n", path, xg_last_error());
        return 1;
    }
    return 0;
}

static int save_checkpoint(run *r)
{
    if (xg_dist_rank() != 0) /* rank 0's file stands for all */
        return 0;
    meta m;
    make_meta(r, &m, true);
    xg_train_state s = {
        .epoch = 0, .step = r->step,
        .loss_scale = xg_grad_scaler_get_scale(r->scaler), /* 0: none */
        .loss_scale_growth = xg_grad_scaler_growth_tracker(r->scaler)};
    xg_rng_state(&s.rng_seed, &s.rng_offset);
    if (xg_checkpoint_save(r->o.checkpoint, r->model, r->opt, &s, m.kv) !=
        XG_OK) {
        fprintf(stderr, PROG ": --checkpoint %s: %s\n", r->o.checkpoint,
                xg_last_error());
        return 1;
    }
    return 0;
}

/* ===== Generation ======================================================== */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Draws a token from logits [v] at `temperature`, among the top_k likeliest
 * (0: all). `work` has room for v floats. */
static int32_t sample_token(const float *logits, float *work, int64_t v,
                            double temperature, int64_t top_k, uint64_t *rng)
{
    float max = -INFINITY;
    for (int64_t i = 0; i < v; i++)
        max = fmaxf(max, logits[i]);
    float cut = -INFINITY;
    if (top_k > 0 && top_k < v) {
        /* the k-th largest value: k passes over a small vocabulary */
        memcpy(work, logits, sizeof(float) * (size_t)v);
        for (int64_t k = 0; k < top_k; k++) {
            int64_t best = 0;
            for (int64_t i = 1; i < v; i++)
                if (work[i] > work[best])
                    best = i;
            cut = work[best];
            work[best] = -INFINITY;
        }
    }
    double total = 0;
    for (int64_t i = 0; i < v; i++) {
        double p = logits[i] >= cut
                       ? exp((double)(logits[i] - max) / temperature)
                       : 0.0;
        work[i] = (float)p;
        total += p;
    }
    double u = (double)(splitmix64(rng) >> 11) * 0x1p-53 * total;
    for (int64_t i = 0; i < v; i++) {
        u -= work[i];
        if (u < 0)
            return (int32_t)i;
    }
    for (int64_t i = v - 1; i > 0; i--) /* rounding: the last candidate */
        if (work[i] > 0)
            return (int32_t)i;
    return 0;
}

/* Logits of the last position for the sequence `ids` [1, n]: through the
 * cache (feeding only what it has not seen) or a full forward pass. */
static xg_tensor *next_logits(run *r, xg_gpt_cache *cache,
                              const int32_t *seq, int64_t len)
{
    int64_t ctx = r->cfg.context;
    if (!cache) {
        int64_t n = len < ctx ? len : ctx;
        int64_t shape[2] = {1, n};
        xg_tensor *x = xg_tensor_from_data(seq + len - n, XG_I32, shape, 2);
        xg_tensor *lg = x ? xg_module_forward(r->model, x) : NULL;
        return lg ? xg_select(xg_select(lg, 0, 0), 0, n - 1) : NULL;
    }
    /* The cache holds every token but the newest: feed that one. When
     * it is full (or empty), start again from the last half context (or
     * the whole prompt, up to a context). */
    int64_t have = xg_gpt_cache_length(cache), from = len - 1;
    if (have == 0 || have >= ctx) {
        int64_t m = have ? (ctx / 2 > 0 ? ctx / 2 : 1) : ctx;
        if (m > len)
            m = len;
        xg_gpt_cache_reset(cache);
        from = len - m;
    }
    int64_t shape[2] = {1, len - from};
    xg_tensor *x = xg_tensor_from_data(seq + from, XG_I32, shape, 2);
    xg_tensor *lg = x ? xg_gpt_forward_cached(cache, x) : NULL;
    return lg ? xg_select(xg_select(lg, 0, 0), 0, len - from - 1) : NULL;
}

/* The prompt's tokens into *seq (room for `extra` more): bytes, or GPT-2's
 * BPE, whose empty prompt is "<|endoftext|>", the token GPT-2's documents
 * start after. Returns the count, or -1 after reporting an error. */
static int64_t prompt_tokens(run *r, int64_t extra, int32_t **seq)
{
    const char *prompt = r->o.prompt && *r->o.prompt ? r->o.prompt : "\n";
    int32_t *ids = NULL;
    size_t n = 0;
    if (r->bpe) {
        int32_t eot = xg_bpe_token_id(r->bpe, "<|endoftext|>", 13);
        if ((!r->o.prompt || !*r->o.prompt) && eot >= 0) {
            ids = malloc(sizeof *ids);
            if (ids)
                ids[0] = eot;
            n = 1;
        } else if (xg_bpe_encode(r->bpe, prompt, strlen(prompt), &ids, &n) !=
                   XG_OK) {
            lib_fail("--prompt");
            return -1;
        }
    } else {
        n = strlen(prompt);
        ids = malloc(sizeof *ids * n);
        for (size_t i = 0; ids && i < n; i++)
            ids[i] = (unsigned char)prompt[i];
    }
    *seq = ids ? realloc(ids, sizeof *ids * (n + (size_t)extra)) : NULL;
    if (!*seq) {
        free(ids);
        fprintf(stderr, PROG ": out of memory\n");
        return -1;
    }
    return (int64_t)n;
}

/* Writes a token's text to stdout. */
static void put_token(const run *r, int32_t tok)
{
    if (!r->bpe) {
        putchar(tok);
        return;
    }
    size_t len;
    const uint8_t *b = xg_bpe_token_bytes(r->bpe, tok, &len);
    if (b)
        fwrite(b, 1, len, stdout);
}

/* Prints --prompt and --generate tokens after it; *rate gets tokens/s. */
static int generate(run *r, double *rate)
{
    int64_t n = r->o.generate, v = r->cfg.vocab_size;
    int32_t *seq = NULL;
    int64_t plen = prompt_tokens(r, n, &seq);
    if (plen < 0)
        return 1;
    float *logits = malloc(sizeof(float) * (size_t)v * 2);
    if (!logits) {
        free(seq);
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    xg_gpt_cache *cache = r->o.no_kv_cache ? NULL
                                           : xg_gpt_cache_new(r->model, 1);
    int rc = (!r->o.no_kv_cache && !cache) ? lib_fail("kv cache") : 0;
    uint64_t rng = r->o.seed ^ 0x6e6e7261746521ull;
    bool grad = xg_set_grad_enabled(false);
    xg_module_set_training(r->model, false);
    printf("--- generated (%lld tokens%s) ---\n%s", (long long)n,
           cache ? "" : ", no KV cache", r->o.prompt ? r->o.prompt : "");
    fflush(stdout);
    double t0 = now();
    int64_t len = plen;
    for (int64_t i = 0; i < n && !rc; i++) {
        xg_scope *s = xg_scope_begin();
        xg_tensor *lg = next_logits(r, cache, seq, len);
        if (!lg || xg_tensor_read(lg, logits, sizeof(float) * (size_t)v) !=
                       XG_OK)
            rc = lib_fail("generate");
        xg_scope_end(s);
        if (rc)
            break;
        int32_t tok = sample_token(logits, logits + v, v, r->o.temperature,
                                   r->o.top_k, &rng);
        seq[len++] = tok;
        put_token(r, tok);
        if (i % 16 == 15)
            fflush(stdout);
    }
    double dt = now() - t0;
    printf("\n--- end ---\n");
    *rate = dt > 0 ? (double)n / dt : 0;
    xg_module_set_training(r->model, true);
    xg_set_grad_enabled(grad);
    xg_gpt_cache_free(cache);
    free(seq);
    free(logits);
    return rc;
}

/* ===== Evaluation on a file, comparison files ============================ */

/* --eval FILE: the mean loss over every predicted token of FILE's
 * consecutive windows (loaded before training, so that a bad file stops
 * the run before it starts). */
static int eval_file(run *r, double *out)
{
    const xg_text *t = r->eval_text;
    const char *path = r->o.eval_file;
    int64_t windows = xg_text_eval_windows(t, XG_TEXT_ALL, r->window);
    if (windows <= 0) {
        fprintf(stderr, PROG ": --eval %s: %lld tokens, fewer than one "
                "window of context + 1 = %lld\n", path,
                (long long)xg_text_split_len(t, XG_TEXT_ALL),
                (long long)r->window + 1);
        return 1;
    }
    int64_t batches = (windows + r->o.batch_size - 1) / r->o.batch_size;
    bool grad = xg_set_grad_enabled(false);
    xg_module_set_training(r->model, false);
    double sum = 0;
    int rc = 0;
    for (int64_t b = 0; b < batches && !rc; b++) {
        xg_scope *s = xg_scope_begin();
        xg_tensor *x, *y;
        float v;
        if (xg_text_eval_batch(t, XG_TEXT_ALL, r->window,
                               r->o.batch_size, b, &x, &y) != XG_OK)
            rc = lib_fail("--eval");
        xg_tensor *loss = rc ? NULL : loss_of(r, x, y);
        if (!rc && (!loss || xg_tensor_item(loss, &v) != XG_OK))
            rc = lib_fail("--eval");
        /* weighted by the batch's windows: a mean over every token */
        if (!rc)
            sum += (double)v * (double)xg_tensor_dim(x, 0);
        xg_scope_end(s);
    }
    xg_module_set_training(r->model, true);
    xg_set_grad_enabled(grad);
    *out = sum / (double)windows;
    return rc;
}

/* --dump-batches: every training batch of the run (x0, y0, ...) and the
 * validation batches (val_x0, val_y0, ...), with their counts ("steps",
 * "eval_batches") as metadata. */
static int dump_batches(run *r)
{
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    xg_status st = w ? XG_OK : xg_last_status();
    for (int64_t k = 0; k < r->o.steps && st == XG_OK; k++) {
        xg_scope *s = xg_scope_begin();
        char nx[32], ny[32];
        xg_tensor *x, *y;
        snprintf(nx, sizeof nx, "x%lld", (long long)k);
        snprintf(ny, sizeof ny, "y%lld", (long long)k);
        st = xg_text_batch(r->text, XG_TEXT_TRAIN, r->o.batch_size,
                           r->window, r->o.seed, (uint64_t)k, &x, &y);
        if (st == XG_OK)
            st = xg_safetensors_writer_add(w, nx, x);
        if (st == XG_OK)
            st = xg_safetensors_writer_add(w, ny, y);
        xg_scope_end(s);
    }
    for (int64_t k = 0; k < r->o.eval_batches && st == XG_OK; k++) {
        xg_scope *s = xg_scope_begin();
        char nx[40], ny[40];
        xg_tensor *x, *y;
        snprintf(nx, sizeof nx, "val_x%lld", (long long)k);
        snprintf(ny, sizeof ny, "val_y%lld", (long long)k);
        st = get_batch(r, true, (uint64_t)k, &x, &y) ? xg_last_status()
                                                      : XG_OK;
        if (st == XG_OK)
            st = xg_safetensors_writer_add(w, nx, x);
        if (st == XG_OK)
            st = xg_safetensors_writer_add(w, ny, y);
        xg_scope_end(s);
    }
    char steps[32], evals[32];
    snprintf(steps, sizeof steps, "%lld", (long long)r->o.steps);
    snprintf(evals, sizeof evals, "%lld", (long long)r->o.eval_batches);
    if (st == XG_OK)
        st = xg_safetensors_writer_metadata(w, "steps", steps);
    if (st == XG_OK)
        st = xg_safetensors_writer_metadata(w, "eval_batches", evals);
    if (st == XG_OK)
        st = xg_safetensors_writer_save(w, r->o.dump_batches);
    xg_safetensors_writer_free(w);
    if (st != XG_OK) {
        fprintf(stderr, PROG ": --dump-batches %s: %s\n", r->o.dump_batches,
                xg_last_error());
        return 1;
    }
    return 0;
}

/* ===== Training ========================================================== */

static void progress(run *r, double loss, double rate)
{
    int64_t n = r->o.steps;
    if (xg_dist_rank() != 0) /* rank 0 speaks for all */
        return;
    if (r->tty) {
        char bar[31];
        int fill = (int)(30 * r->step / (n ? n : 1));
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '=' : ' ';
        bar[30] = '\0';
        fprintf(stderr, "\r\033[Kstep %lld/%lld [%s] loss=%.4f %.0f tok/s",
                (long long)r->step, (long long)n, bar, loss, rate);
    } else {
        fprintf(stderr, "step %lld/%lld loss=%.4f %.0f tok/s\n",
                (long long)r->step, (long long)n, loss, rate);
    }
}

/* Validation (and the checkpoint) at this step. */
static int evaluation(run *r)
{
    double val;
    if (validate(r, &val))
        return 1;
    r->last_val_loss = val;
    if (r->tty && xg_dist_rank() == 0)
        fprintf(stderr, "\r\033[K");
    printf("step %lld: train_loss %.4f val_loss %.4f\n", (long long)r->step,
           r->last_train_loss, val);
    fflush(stdout);
    if (r->log && sample_log_row(r->log, "eval,%lld,,,,%.3f,%.6f\n",
                                 (long long)r->step, now() - r->start, val))
        return 1;
    return r->o.checkpoint ? save_checkpoint(r) : 0;
}

static int train(run *r)
{
    /* per step, over all ranks */
    int64_t tokens = r->o.batch_size * r->window * r->o.accumulate *
                     xg_dist_world_size();
    int64_t every = r->tty ? 1 : (r->o.steps + 9) / 10;
    double rate_t0 = now(), rate_tokens = 0, loss_sum = 0;
    int64_t loss_n = 0;
    r->start = now();
    if (r->step == 0) { /* where training starts from */
        double val;
        if (validate(r, &val))
            return 1;
        printf("step 0: val_loss %.4f\n", val);
        fflush(stdout);
        if (r->log && sample_log_row(r->log, "eval,0,,,,%.3f,%.6f\n",
                                     now() - r->start, val))
            return 1;
    }
    while (r->step < r->o.steps) {
        double loss, t0 = now();
        if (train_step(r, &loss))
            return 1;
        double dt = now() - t0;
        r->train_time += dt;
        rate_tokens += (double)tokens;
        loss_sum += loss;
        loss_n++;
        r->win_loss += loss;
        r->win_time += dt;
        r->win_steps++;
        double rate = rate_tokens / (now() - rate_t0);
        if (r->step % every == 0 || r->step == r->o.steps)
            progress(r, loss, rate);
        if (r->step % 50 == 0) { /* a recent rate, not since the start */
            rate_t0 = now();
            rate_tokens = 0;
        }
        if (r->log && (r->step % r->o.log_every == 0 ||
                       r->step == r->o.steps)) {
            if (sample_log_row(r->log, "train,%lld,%.6f,%.6g,%.1f,%.3f,\n",
                               (long long)r->step,
                               r->win_loss / (double)r->win_steps,
                               lr_at(r, r->step - 1),
                               (double)tokens * (double)r->win_steps /
                                   r->win_time,
                               now() - r->start))
                return 1;
            r->win_loss = r->win_time = 0;
            r->win_steps = 0;
        }
        if (r->step % r->o.eval_every == 0 || r->step == r->o.steps) {
            r->last_train_loss = loss_sum / (double)loss_n;
            loss_sum = 0;
            loss_n = 0;
            if (evaluation(r))
                return 1;
        }
    }
    return 0;
}

static int64_t count_weights(const xg_module *m)
{
    int64_t n = 0;
    for (int i = 0; i < xg_module_param_count(m); i++)
        n += xg_tensor_numel(xg_module_param(m, i, NULL));
    return n;
}

/* Builds the model (from flags, --load or --resume) and the optimizer. */
/* --lora-targets: the comma-separated names into r->targets. */
static int lora_targets(run *r)
{
    xg_lora_config *c = &r->o.lora_cfg;
    static const char *const fallback[] = {"c_attn"};
    if (!r->o.lora_targets) {
        c->targets = fallback;
        c->n_targets = 1;
        return 0;
    }
    r->targets_text = strdup(r->o.lora_targets);
    if (!r->targets_text) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    int n = 0;
    for (char *p = strtok(r->targets_text, ","); p; p = strtok(NULL, ",")) {
        if (n == (int)(sizeof r->targets / sizeof *r->targets)) {
            fprintf(stderr, PROG ": --lora-targets: more than %d names\n", n);
            return 2;
        }
        r->targets[n++] = p;
    }
    if (n == 0) {
        fprintf(stderr, PROG ": --lora-targets '%s': no names\n",
                r->o.lora_targets);
        return 2;
    }
    c->targets = r->targets;
    c->n_targets = n;
    return 0;
}

/* --init DIR: GPT-2 from a Hugging Face folder (with --resume, the
 * checkpoint must be of the same shape). */
static int init_model(run *r)
{
    float dropout = r->o.cfg.dropout;
    r->model = xg_gpt_load_hf(r->o.init, r->o.dropout_given ? &dropout : NULL);
    if (!r->model) {
        fprintf(stderr, PROG ": --init %s: %s\n", r->o.init, xg_last_error());
        return 1;
    }
    xg_gpt_config c;
    xg_gpt_config_of(r->model, &c);
    if (r->o.resume &&
        (c.vocab_size != r->cfg.vocab_size || c.context != r->cfg.context ||
         c.n_layer != r->cfg.n_layer || c.n_head != r->cfg.n_head ||
         c.n_embd != r->cfg.n_embd)) {
        fprintf(stderr, PROG ": --resume %s: the checkpoint's model is not "
                "the shape of --init %s\n", r->o.resume, r->o.init);
        return 1;
    }
    if (xg_bpe_vocab_size(r->bpe) > c.vocab_size) {
        fprintf(stderr, PROG ": --init %s: the tokenizer has %d tokens, the "
                "model's vocabulary %lld\n", r->o.init,
                (int)xg_bpe_vocab_size(r->bpe), (long long)c.vocab_size);
        return 1;
    }
    r->cfg = c;
    return 0;
}

/* The training window: --context, which a pretrained model's context
 * bounds, or the model's context. */
static int set_window(run *r)
{
    r->window = r->o.context_given ? r->o.cfg.context : r->cfg.context;
    if (r->window > r->cfg.context) {
        fprintf(stderr, PROG ": --context %lld: the model's context is "
                "%lld\n", (long long)r->window, (long long)r->cfg.context);
        return 2;
    }
    return 0;
}

/* Builds the model (from flags, --init, --load or --resume), its adapters
 * (--lora, --load-adapter) and the optimizer. */
static int setup_model(run *r)
{
    const char *from = r->o.resume ? r->o.resume : r->o.load;
    if (from && read_meta(r, r->o.resume ? "--resume" : "--load", from,
                          r->o.resume != NULL))
        return 1;
    if (r->o.init) {
        if (init_model(r))
            return 1;
    } else if (!(r->model = xg_gpt(&r->cfg))) {
        return lib_fail("model");
    }
    int wrc = set_window(r);
    if (wrc)
        return wrc;
    if (r->o.resume && r->ckpt_window != r->window) {
        fprintf(stderr, PROG ": --resume %s: the checkpoint was made with "
                "windows of %lld tokens, this run has %lld (--context): give "
                "the same value to continue it exactly\n", r->o.resume,
                (long long)r->ckpt_window, (long long)r->window);
        return 1;
    }
    if (r->o.save_init && xg_dist_rank() == 0 &&
        save_model(r, r->o.save_init))
        return 1;
    if (r->o.load && xg_module_load(r->model, r->o.load) != XG_OK) {
        fprintf(stderr, PROG ": --load %s: %s\n", r->o.load, xg_last_error());
        return 1;
    }
    if (r->o.load_adapter &&
        xg_lora_load_peft(r->model, r->o.load_adapter) != XG_OK) {
        fprintf(stderr, PROG ": --load-adapter %s: %s\n", r->o.load_adapter,
                xg_last_error());
        return 1;
    }
    if (r->o.lora) {
        int rc = lora_targets(r);
        if (rc)
            return rc;
        if (xg_lora_apply(r->model, &r->o.lora_cfg) != XG_OK)
            return lib_fail("--lora");
    }
    xg_adam_options ao = xg_adamw_defaults();
    ao.lr = (float)r->o.lr;
    ao.weight_decay = (float)r->o.weight_decay;
    r->opt = xg_gpt_adamw(r->model, &ao);
    if (!r->opt)
        return lib_fail("optimizer");
    r->autocast = sample_precision_dtype(r->o.precision);
    if (r->autocast == XG_F16 && !(r->scaler = xg_grad_scaler_new(NULL)))
        return lib_fail("loss scaler");
    r->n_params = xg_module_param_count(r->model);
    r->params = malloc(sizeof *r->params * (size_t)r->n_params);
    if (!r->params) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    for (int i = 0; i < r->n_params; i++)
        r->params[i] = xg_module_param(r->model, i, NULL);
    r->n_weights = count_weights(r->model);
    for (int i = 0; i < r->n_params; i++)
        if (xg_tensor_requires_grad(r->params[i]))
            r->n_trained += xg_tensor_numel(r->params[i]);
    if (r->o.resume) {
        xg_train_state s;
        if (xg_checkpoint_load(r->o.resume, r->model, r->opt, &s) != XG_OK) {
            fprintf(stderr, PROG ": --resume %s: %s\n", r->o.resume,
                    xg_last_error());
            return 1;
        }
        if (s.step > r->o.steps) {
            fprintf(stderr, PROG ": --resume %s: the checkpoint is at step "
                    "%lld, past --steps %lld\n", r->o.resume,
                    (long long)s.step, (long long)r->o.steps);
            return 1;
        }
        r->step = s.step;
        xg_rng_set_state(s.rng_seed, s.rng_offset);
        if (r->scaler && (s.loss_scale <= 0 ||
                          xg_grad_scaler_set_state(r->scaler, s.loss_scale,
                                                   s.loss_scale_growth) !=
                              XG_OK)) {
            fprintf(stderr, PROG ": --resume %s: %s\n", r->o.resume,
                    s.loss_scale <= 0 ? "the checkpoint has no loss scale"
                                      : xg_last_error());
            return 1;
        }
    }
    /* Every rank starts from rank 0's parameters, with its own dropout. */
    if (xg_dist_broadcast_module(r->model) != XG_OK ||
        (r->o.steps > 0 && !(r->sync = xg_grad_sync_new(r->model, 0))))
        return lib_fail("data-parallel set-up");
    sample_dist_rank_rng();
    return 0;
}

/* --encode FILE: the file's token ids, space-separated on one line. */
static int encode_file(run *r)
{
    uint8_t *bytes = NULL;
    size_t len = 0, n = 0;
    int32_t *ids = NULL;
    if (xg_text_read_files(&r->o.encode, 1, &bytes, &len) != XG_OK)
        return lib_fail("--encode");
    xg_status st = XG_OK;
    if (r->bpe) {
        st = xg_bpe_encode(r->bpe, bytes, len, &ids, &n);
    } else if ((ids = malloc(sizeof *ids * (len ? len : 1)))) {
        n = len;
        st = xg_byte_encode(bytes, len, ids);
    } else {
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    free(bytes);
    if (st != XG_OK) {
        free(ids);
        return lib_fail("--encode");
    }
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", (int)ids[i]);
    printf("\n");
    free(ids);
    return ferror(stdout) ? 1 : 0;
}

/* The end of an adapter run: --save-adapter, then --merge-to (which
 * needs the optimizer gone: merging removes the adapters' tensors). */
static int adapters_out(run *r)
{
    if (r->o.save_adapter &&
        xg_lora_save_peft(r->model, r->o.save_adapter,
                          r->o.init ? r->o.init : "") != XG_OK) {
        fprintf(stderr, PROG ": --save-adapter %s: %s\n", r->o.save_adapter,
                xg_last_error());
        return 1;
    }
    if (!r->o.merge_to)
        return 0;
    xg_optim_free(r->opt);
    r->opt = NULL;
    if (xg_lora_merge(r->model) != XG_OK)
        return lib_fail("--merge-to");
    return save_model(r, r->o.merge_to);
}

static int main_run(run *r)
{
    int rc;
    if (r->o.init && xg_bpe_load(r->o.init, &r->bpe) != XG_OK) {
        fprintf(stderr, PROG ": --init %s: %s\n", r->o.init, xg_last_error());
        return 1;
    }
    if (r->o.encode)
        return encode_file(r);
    if ((rc = load_data(&r->o, r->bpe, &r->text)))
        return rc;
    if (r->o.eval_file &&
        text_load(r->bpe, &r->o.eval_file, 1, &r->eval_text) != XG_OK)
        return lib_fail("--eval");
    xg_manual_seed(r->o.seed);
    if ((rc = setup_model(r)))
        return rc;
    xg_device *dev = xg_device_current();
    printf("device: %s (%s)\n", xg_device_name(dev), xg_device_backend(dev));
    printf("data: %lld tokens (train %lld, validation %lld), %s\n",
           (long long)xg_text_split_len(r->text, XG_TEXT_ALL),
           (long long)xg_text_split_len(r->text, XG_TEXT_TRAIN),
           (long long)xg_text_split_len(r->text, XG_TEXT_VAL),
           r->bpe ? "GPT-2's BPE tokens" : "byte tokens");
    printf("model: GPT%s%s, %lld layers, %lld heads, %lld wide, context "
           "%lld, %lld parameters (%lld trained)\n", r->o.init ? " from " : "",
           r->o.init ? r->o.init : "", (long long)r->cfg.n_layer,
           (long long)r->cfg.n_head, (long long)r->cfg.n_embd,
           (long long)r->cfg.context, (long long)r->n_weights,
           (long long)r->n_trained);
    if (r->o.steps > 0)
        printf("training: %lld steps of %lld x %lld tokens%s, AdamW lr %g "
               "(%s), weight decay %g, precision %s\n",
               (long long)r->o.steps,
               (long long)(r->o.batch_size * r->o.accumulate),
               (long long)r->window,
               r->o.accumulate > 1 ? " (accumulated)" : "", r->o.lr,
               r->o.cosine ? "cosine" : "constant", r->o.weight_decay,
               r->o.precision);
    fflush(stdout);
    sample_print_dist(r->o.batch_size);
    if (r->o.dump_batches && xg_dist_rank() == 0 && (rc = dump_batches(r)))
        return rc;
    if (r->o.log && xg_dist_rank() == 0) {
        r->log = sample_log_open_with(PROG, r->o.log,
                                      r->o.resume ? r->step : -1, LOG_HEADER);
        if (!r->log)
            return 1;
    }
    r->tty = isatty(STDERR_FILENO);
    if (r->step < r->o.steps && (rc = train(r)))
        return rc;
    if (r->o.steps == 0 || r->step == 0) {
        if ((rc = validate(r, &r->last_val_loss)))
            return rc;
        printf("val_loss %.4f\n", r->last_val_loss);
    }
    sample_print_sync_stats(r->sync, NULL);
    if (xg_dist_rank() != 0) /* the files and the text are rank 0's */
        return 0;
    if (r->o.save && (rc = save_model(r, r->o.save)))
        return rc;
    double eval_loss = 0, gen_rate = 0;
    if (r->o.eval_file && (rc = eval_file(r, &eval_loss)))
        return rc;
    if (r->o.generate > 0 && (rc = generate(r, &gen_rate)))
        return rc;
    if ((rc = adapters_out(r)))
        return rc;
    if (r->scaler)
        printf("loss scale: %g, %lld steps skipped (inf/NaN gradients)\n",
               (double)xg_grad_scaler_get_scale(r->scaler),
               (long long)r->skipped);
    printf("result: backend=%s model=gpt params=%lld steps=%lld "
           "train_loss=%.4f val_loss=%.4f tokens_per_s=%.0f",
           xg_device_backend(dev), (long long)r->n_weights,
           (long long)r->step, r->last_train_loss, r->last_val_loss,
           r->train_time > 0
               ? (double)(r->step * r->o.batch_size * r->o.accumulate *
                          r->window * xg_dist_world_size()) / r->train_time
               : 0.0);
    if (r->o.eval_file)
        printf(" eval_loss=%.6f", eval_loss);
    if (r->o.generate > 0)
        printf(" gen_tokens_per_s=%.1f", gen_rate);
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    run r = {.o = {.val_fraction = XG_TEXT_DEFAULT_VAL_FRACTION,
                   .cfg = {.vocab_size = XG_BYTE_VOCAB, .context = 128,
                           .n_layer = 4, .n_head = 4, .n_embd = 128,
                           .dropout = 0.0f, .bias = true,
                           .layer_norm_eps = 1e-5f},
                   .batch_size = 16, .steps = 2000, .accumulate = 1,
                   .lr = 1e-3, .weight_decay = 0.1, .grad_clip = 1.0,
                   .eval_every = 200, .eval_batches = 20, .log_every = 20,
                   .temperature = 1.0, .precision = "f32"}};
    sample_set_prog(PROG);
    if (sample_dist_begin(&argc, &argv))
        return sample_dist_end(1);
    int rc = parse(&r.o, argc, argv);
    if (rc)
        return sample_dist_end(rc < 0 ? 0 : rc);
    r.cfg = r.o.cfg;
    rc = main_run(&r);
    if (rc == 1 && r.log)
        sample_log_close(r.log);
    else if (r.log && sample_log_close(r.log))
        rc = 1;
    xg_optim_free(r.opt);
    xg_grad_scaler_free(r.scaler);
    free(r.params);
    xg_module_free(r.model);
    xg_text_free(r.text);
    xg_text_free(r.eval_text);
    xg_bpe_free(r.bpe);
    free(r.targets_text);
    xg_grad_sync_free(r.sync);
    xg_shutdown();
    return sample_dist_end(rc);
}
