/* Private to comm/: the DDP object's layout, shared by comm/ddp.c (buckets
 * and all-reduce) and comm/ddp_zero.c (ZeRO stage 1). */
#ifndef TG_DDP_INTERNAL_H
#define TG_DDP_INTERNAL_H

#include "comm_internal.h"

#define TG__MIB ((size_t)1 << 20)

typedef struct tg__zero tg__zero;

typedef struct ddp_param {
    tg_tensor *t;
    tg_tensor *view; /* its slot, shaped like t: the ->grad it adopts */
    int bucket;
    int64_t off; /* element offset of the gradient in its bucket */
    int64_t numel;
    bool ready; /* its gradient was copied this step */
} ddp_param;

typedef struct ddp_bucket {
    tg_tensor *buf;
    tg_dtype dt;
    int first, count; /* order positions */
    int64_t ngrad;    /* gradient elements; the flags follow */
    int nready;
    bool launched, done;
    tg__req req;
    int64_t soff; /* ZeRO: offset of this rank's block in the shard tensor */
    double t0_us;
    /* grad_dtype bf16: the bucket rounded to bf16 (a step tensor), summed. */
    tg_tensor *low;
    char label[40];
} ddp_bucket;

struct tg_ddp {
    tg_ctx *ctx;
    tg_world *w;
    int ntrain;
    ddp_param *p; /* by order position */
    tg_tensor *views; /* the slot views, one per trainable parameter */
    int *index;   /* order position -> index into the caller's params */
    ddp_bucket *b;
    int nb, next_launch;
    /* Open-addressing table from tensor pointer to order position. */
    tg_tensor **keys;
    int *vals;
    size_t mask;
    double *flags; /* host scratch, as many as the largest bucket has params */
    float *flags32;
    /* One flat persistent tensor per dtype holds every bucket; b[i].buf is
     * a view of it (kept in bufviews), so that the buckets can be laid out
     * anew over the same memory. */
    tg_tensor *flat[2];
    tg_tensor *bufviews;
    size_t cap_first, cap;
    /* The order in which gradients became final in the first synchronised
     * step (order positions), and whether the buckets were rebuilt from it. */
    int *ready_seq;
    int nready_seq;
    bool rebuilt;
    bool sync;
    tg_status err; /* a failure inside the hook, reported by tg_ddp_wait */
    /* Buffers (batch-norm statistics) broadcast from rank 0 by
     * tg_ddp_broadcast_buffers, packed into one host staging area. */
    tg_tensor **bufs;
    int nbufs;
    unsigned char *bstage;
    size_t bstage_bytes;
    tg_trace *trace;
    const tg__coll *coll;
    void *cstate;
    /* ZeRO stage 1 (comm/ddp_zero.c): each bucket's gradients are padded to
     * a multiple of the world size and reduce-scattered; block r of bucket
     * i (ngrad / size elements) lands at b[i].soff in `shard` on rank r. */
    bool zero;
    tg_tensor *shard;
    /* tg_ddp_config.grad_dtype: TG_BF16 sums f32 buckets in bf16. */
    tg_dtype grad_dt;
    double *zflags; /* by order position: this rank had a gradient */
    struct tg__zero *z;
};

/* The bucket's first element in memory. */
void *tg__ddp_bucket_data(const ddp_bucket *b);
/* Set the world's message from the context's failure while `doing`. */
tg_status tg__ddp_ctx_fail(tg_ddp *d, const char *doing);
/* Copy a view made in the step arena into memory that lives as long as
 * the ddp (it then survives tg_step_reset). */
void tg__ddp_keep_view(tg_tensor *dst, const tg_tensor *v, const char *name);
/* ZeRO: after the reduce-scatters, the average of this rank's block and
 * which parameters had a gradient on some rank. */
tg_status tg__ddp_zero_unpack(tg_ddp *d);
void tg__ddp_zero_free(tg_ddp *d);

#endif
