/*
 * tapegrad/comm.h: the MPI world, collectives, data-parallel gradients
 * (DDP) and a Chrome-trace writer.
 *
 * Overview
 * --------
 * A tg_world wraps MPI: rank, size, local rank (ranks sharing a node) and
 * node count, on a communicator of its own (a dup of MPI_COMM_WORLD with
 * MPI_ERRORS_RETURN). A process started without mpirun is a world of one.
 * Every collective runs under a timeout (default 300 s): it is started in its
 * non-blocking form and polled against a deadline, so a lost or stuck peer
 * yields TG_ERR_TIMEOUT, never a hang.
 *
 * A tg_ddp makes a set of parameters data-parallel: at creation it checks
 * that every rank has the same parameters (names, dtypes, shapes, order) and
 * copies rank 0's values to all; during tg_backward() it gathers final
 * gradients into buckets and starts an all-reduce for each full bucket while
 * backward goes on; tg_ddp_wait() finishes them and leaves in every ->grad
 * the average over ranks. After its first synchronised step a parameter's
 * ->grad is a view of its slot in a bucket (PyTorch's
 * gradient_as_bucket_view): autograd accumulates into the bucket in place,
 * and no gradient is copied. Do not replace ->grad by another tensor while
 * the ddp lives (it would be copied in, and then adopted, at the next step).
 *
 *     tg_world *world;
 *     char err[512];
 *     if (tg_world_init(&argc, &argv, NULL, &world, err, sizeof err) != TG_OK)
 *         { fprintf(stderr, "%s\n", err); exit(1); }
 *     tg_ddp *ddp;
 *     if (tg_ddp_new(ctx, world, nparams, params, 0, NULL, NULL, &ddp) != TG_OK)
 *         { fprintf(stderr, "%s\n", tg_world_error(world)); exit(1); }
 *     for (int64_t step = 0; ...; step++) {
 *         tg_world_set_step(world, step);
 *         for (int m = 0; m < micro; m++) {
 *             tg_ddp_set_sync(ddp, m == micro - 1);  // no_sync on all but the last
 *             ... forward, tg_backward(ctx, loss, NULL, 0) ...
 *         }
 *         if (tg_ddp_wait(ddp) != TG_OK) { report tg_world_error(world); exit(1); }
 *         ... optimizer step, zero grads, tg_step_reset ...
 *     }
 *     tg_ddp_free(ddp);
 *     tg_world_free(world);
 *
 * Errors: every function that can fail returns a tg_status and leaves a
 * message in the world (tg_world_error()) that names this rank, the MPI call
 * or collective, and the step and bucket when known, e.g.
 *   "rank 0: allreduce bucket 2 (step 17) timed out after 2.0 s; no answer
 *    from rank 1 (lost or stuck)".
 * After a timeout or an MPI error the world is broken: every later
 * collective fails at once with the same message. Exit the process with a
 * non-zero code (tg_world_free() skips MPI_Finalize on a broken world, since
 * finalizing could wait for the lost peer); under mpirun the launcher then
 * ends the remaining ranks.
 *
 * Threads: MPI is initialised with MPI_THREAD_FUNNELED; call the world only
 * from the thread that created it.
 *
 * Ownership: tg_world and tg_ddp are heap objects freed by their _free
 * function; tg_ddp's bucket tensors belong to the context.
 */
#ifndef TAPEGRAD_COMM_H
#define TAPEGRAD_COMM_H

#include "tapegrad/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the world ---- */

typedef struct tg_world tg_world;

typedef struct tg_world_config {
    /* Seconds any one collective may take; <= 0 means 300. */
    double timeout_s;
} tg_world_config;

/* Initialise MPI (unless the caller already did; then it is not finalised
 * by tg_world_free either) and build the world. argc/argv may be NULL. On
 * failure *out is NULL and err (errlen bytes, may be NULL) says why. */
tg_status tg_world_init(int *argc, char ***argv, const tg_world_config *cfg, tg_world **out,
                        char *err, size_t errlen);
/* Finalise MPI when the world initialised it and is not broken. NULL is ok. */
void tg_world_free(tg_world *w);
/* End the whole job now (MPI_Abort) with exit code `code`. */
void tg_world_abort(tg_world *w, int code);

int tg_world_rank(const tg_world *w);
int tg_world_size(const tg_world *w);
/* Rank among the processes of this node, and how many share the node. */
int tg_world_local_rank(const tg_world *w);
int tg_world_local_size(const tg_world *w);
int tg_world_node_count(const tg_world *w);

double tg_world_timeout(const tg_world *w);
void tg_world_set_timeout(tg_world *w, double seconds);
/* The training step, quoted in error messages; -1 (the default) means none. */
void tg_world_set_step(tg_world *w, int64_t step);

/* Collective: this rank's monotonic clock (tg_trace_now_us) minus rank 0's,
 * in microseconds, measured by ping-pongs with rank 0 under the world's
 * timeout; *error_us (may be NULL) gets the bound on its error (half the best
 * round trip; on rank 0 the largest of the peers'). 0 on a world of one. */
tg_status tg_world_clock_offset(tg_world *w, double *offset_us, double *error_us);
int64_t tg_world_step(const tg_world *w);

/* The message of the last failure ("" when none), and whether the world is
 * broken (a collective timed out or failed). */
const char *tg_world_error(const tg_world *w);
bool tg_world_broken(const tg_world *w);

/* ---- collectives over host memory ----
 * count is in elements of dt. `what` (may be NULL) names the operation in
 * error messages ("eval metrics"). Sum is defined for f32, f64, i32 and i64;
 * broadcast and all-gather take any dtype (TG_U8 for raw bytes). Every rank
 * must call the same collectives in the same order with the same counts. */

/* buf[i] = sum over ranks of buf[i], in place. */
tg_status tg_allreduce_sum(tg_world *w, void *buf, int64_t count, tg_dtype dt, const char *what);
/* Copy root's buf to every rank. */
tg_status tg_broadcast(tg_world *w, void *buf, int64_t count, tg_dtype dt, int root,
                       const char *what);
/* recv (count * size elements) gets every rank's send, in rank order. */
tg_status tg_allgather(tg_world *w, const void *send, void *recv, int64_t count, tg_dtype dt,
                       const char *what);
tg_status tg_barrier(tg_world *w, const char *what);

/* For evaluation: sums n doubles over ranks in place, e.g. {loss sum,
 * correct, count}; counts up to 2^53 are exact. */
tg_status tg_metrics_allreduce(tg_world *w, int n, double *vals);

/* ---- collectives over device memory (NCCL) ----
 * Only with CUDA; without it these return TG_ERR_UNSUPPORTED. tg_world_nccl_init
 * selects the CUDA device local_rank % device count, creates the NCCL
 * communicator (under the timeout) and its own stream; tg_ddp_new calls it
 * for a CUDA context. */
tg_status tg_world_nccl_init(tg_world *w);
/* buf is device memory; the call returns when the sum is complete. */
tg_status tg_allreduce_sum_device(tg_world *w, void *buf, int64_t count, tg_dtype dt,
                                  const char *what);

/* Install the world as ctx's collective (tg_set_collective in runtime.h),
 * so that the ops across ranks (tg_world_sum, SyncBatchNorm) sum over its
 * ranks: with MPI for a CPU context, with NCCL for a CUDA one (initialised on
 * first use). A failure breaks the world like any collective; the op then
 * fails with the world's message. The world must outlive ctx's use of it;
 * tg_set_collective(ctx, NULL) removes it. */
void tg_world_attach(tg_world *w, tg_ctx *ctx);

/* ---- trace (Chrome trace event format) ---- */

typedef struct tg_trace tg_trace;

/* Events are kept in memory (up to max_events, <= 0: 65536; more are
 * counted and dropped: tg_trace_dropped() tells, and the file's
 * "otherData.dropped_events") and written by tg_trace_close() to
 * "<prefix>.rank<r>.json", loadable in chrome://tracing or Perfetto. pid is
 * the rank; track 0 holds begin/end spans, track 1 the DDP buckets; every
 * span has "args":{"step":N}, the step set when it began. */
tg_status tg_trace_open(const char *prefix, int rank, int max_events, tg_trace **out, char *err,
                        size_t errlen);
/* Write the file and free the trace; NULL is ok. */
tg_status tg_trace_close(tg_trace *t, char *err, size_t errlen);
/* Microseconds on a monotonic clock. */
double tg_trace_now_us(void);
/* Nested spans on track 0 ("forward", "backward", "optimizer"); up to 16 deep.
 * name is copied (at most 47 characters). t may be NULL (no-op). */
void tg_trace_begin(tg_trace *t, const char *name);
void tg_trace_end(tg_trace *t);
/* A finished span [t0, t1] in microseconds on any track. */
void tg_trace_span(tg_trace *t, int track, const char *name, double t0_us, double t1_us);
int64_t tg_trace_count(const tg_trace *t);
int64_t tg_trace_dropped(const tg_trace *t);
/* The step that spans begun from now on belong to (the trainer sets it
 * before each step; 0 before the first). t may be NULL. */
void tg_trace_set_step(tg_trace *t, int64_t step);
/* This rank's monotonic clock minus rank 0's, in microseconds (from
 * tg_world_clock_offset), written to the file so that `tapegrad trace
 * merge` can put every rank on rank 0's time line. */
void tg_trace_set_clock_offset(tg_trace *t, double offset_us);

/* ---- data-parallel gradients ---- */

typedef struct tg_ddp tg_ddp;

typedef struct tg_ddp_config {
    /* Bucket capacity in bytes; 0: half the model's gradient bytes, at
     * least 1 MiB and at most 25 MiB. A parameter larger than a bucket gets
     * a bucket of its own. */
    size_t bucket_bytes;
    /* Capacity of the first bucket (the last parameters, whose gradients
     * are final first), so that communication starts early; 0: a quarter of
     * the model's gradient bytes, at least 64 KiB and at most 1 MiB. */
    size_t first_bucket_bytes;
    /* 1: ZeRO stage 1 (see tg_ddp_zero_init); 0: plain all-reduce. Ignored
     * on a world of one. */
    int zero_stage;
    /* The dtype f32 gradients travel in: TG_F32 (0, the default) or TG_BF16,
     * as PyTorch DDP's bf16_compress_hook: each f32 bucket is rounded to
     * bf16, summed over the ranks in bf16 (half the bytes), then widened to
     * f32 and divided by the world size in f32. f64 buckets stay f64. Not
     * with zero_stage 1 (TG_ERR_UNSUPPORTED). */
    tg_dtype grad_dtype;
} tg_ddp_config;

/* Make params data-parallel. Collective: every rank calls it with the same
 * model. It all-gathers a digest of every parameter's name, dtype and shape
 * and fails (TG_ERR_INVALID) naming the first parameter and the rank that
 * differ; then broadcasts rank 0's params and buffers (non-trainable state
 * such as batch-norm statistics; nbuffers may be 0) to all ranks; then
 * builds the buckets and installs the context's grad hook (tg_set_grad_hook;
 * do not install another while the ddp lives). Parameters that do not
 * require grad are broadcast but get no bucket. cfg may be NULL. The params
 * array is copied; the tensors must live as long as the ddp. */
tg_status tg_ddp_new(tg_ctx *ctx, tg_world *world, int nparams, tg_tensor *const *params,
                     int nbuffers, tg_tensor *const *buffers, const tg_ddp_config *cfg,
                     tg_ddp **out);
/* Remove the hook and free the ddp (the bucket tensors stay in the context's
 * persistent pool). A ->grad that is a bucket view is replaced by a
 * persistent copy (NULL if that allocation fails). NULL is ok. */
void tg_ddp_free(tg_ddp *d);

/* sync false is PyTorch's no_sync(): backward only accumulates into ->grad
 * and tg_ddp_wait() does nothing. Set it back to true before the backward of
 * the last micro-step; that step's all-reduce carries the accumulated sum. */
void tg_ddp_set_sync(tg_ddp *d, bool sync);
bool tg_ddp_sync(const tg_ddp *d);

/* Finish the step's communication: start every bucket whose all-reduce has
 * not started (a parameter that got no gradient on this rank contributes
 * zeros), wait for all of them under the world's timeout, and write the
 * average over ranks into each parameter's ->grad. A parameter that got a
 * gradient on some rank but not here gets a (persistent, zero-initialised)
 * ->grad; one that got none on any rank keeps ->grad NULL. Call it after the
 * last backward of a step, before the optimizer. A failure here (a timeout,
 * an MPI error, a gradient finalised twice in one synchronised step) breaks
 * the world: end the run. */
tg_status tg_ddp_wait(tg_ddp *d);

/* Collective: copies rank 0's buffers (those given to tg_ddp_new: batch-norm
 * running statistics) to every rank, in one broadcast, as PyTorch DDP does
 * before each forward (broadcast_buffers), so that the ranks' statistics do
 * not drift apart and every rank evaluates rank 0's model (the one its
 * checkpoints hold). Nothing to do on one rank or without buffers. */
tg_status tg_ddp_broadcast_buffers(tg_ddp *d);

/* ---- ZeRO stage 1 (tg_ddp_config.zero_stage = 1, more than one rank) ----
 * The buckets reduce-scatter instead of all-reducing: each bucket's
 * gradients are padded to a multiple of the world size N and rank r keeps
 * the average of block r only. tg_ddp_zero_init makes this rank's optimizer
 * over the parameter elements of its blocks (1-D views of the parameters),
 * so its state is about 1/N of the whole optimizer's; the update rules are
 * elementwise, so the trajectory is the whole optimizer's. Per step:
 * backward, tg_ddp_wait (reduce-scatter), then tg_ddp_zero_step instead of
 * clipping, tg_optim_step and zeroing the gradients. The bucket layout is
 * not rebuilt after the first step. Parameters must be f32. A parameter
 * that no rank gave a gradient is not stepped, as without ZeRO. */
struct tg_optim_config;
struct tg_optim;
struct tg_ckpt_tensor;
tg_status tg_ddp_zero_init(tg_ddp *d, const struct tg_optim_config *oc);
/* Clip (max_norm > 0: the global norm, summed over the ranks' shards), step
 * this rank's shard at lr, all-gather the parameters (one in-place
 * all-gather per bucket) and zero the gradients. A failure breaks the world. */
tg_status tg_ddp_zero_step(tg_ddp *d, double lr, double max_norm);
/* This rank's optimizer (its step count and state), NULL before init. */
struct tg_optim *tg_ddp_zero_optim(tg_ddp *d);
/* Bytes of optimizer state this rank holds. */
size_t tg_ddp_zero_state_bytes(const tg_ddp *d);
/* Collective, for checkpoints: rank 0 gets in out (room for max) the whole
 * optimizer's state tensors, each shaped like its parameter and named as
 * tg_optim_state names them, in parameter order ("step" first), as step
 * tensors (valid until tg_step_reset); *n their count (0 on other ranks). */
tg_status tg_ddp_zero_gather_state(tg_ddp *d, struct tg_tensor **out, int max, int *n);
/* Restore this rank's shard from a checkpoint's tensors read into host
 * memory (tg_ckpt_read_tensors), written by any world size with or without
 * ZeRO: the file must hold exactly the state this optimizer keeps for every
 * parameter. optim_steps: the checkpoint's optimizer step count. */
tg_status tg_ddp_zero_load_state(tg_ddp *d, const struct tg_ckpt_tensor *ts, int n,
                                 int64_t optim_steps);

/* Record bucket spans ("allreduce bucket 3") in t (NULL: stop recording). */
void tg_ddp_set_trace(tg_ddp *d, tg_trace *t);

/* Introspection (tests, logs). The ddp orders the trainable parameters in
 * reverse (the last parameter first); bucket i holds order positions
 * [first, first + count) and `bytes` of gradient; tg_ddp_bucket_param(d, k)
 * is the index into params of order position k. bucket_info returns false
 * when i is out of range. */
int tg_ddp_bucket_count(const tg_ddp *d);
bool tg_ddp_bucket_info(const tg_ddp *d, int i, int *first, int *count, size_t *bytes);
int tg_ddp_bucket_param(const tg_ddp *d, int k);

#ifdef __cplusplus
}
#endif
#endif
