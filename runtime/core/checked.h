/*
 * Overflow-checked size arithmetic for sizes that come from user-given
 * shapes (element counts, byte sizes, strides, offsets, file dimensions).
 * Header-only and free of any tapegrad type, so that every reader of sizes
 * (tensors, views, the arena, datasets, file formats) can use it.
 *
 * The limits: an element count is an int64_t; a byte size must fit
 * TG__MAX_BYTES (PTRDIFF_MAX), so that byte offsets computed as
 * int64_t * element size and pointer differences cannot overflow either.
 * Each helper returns true and writes the result, or returns false (and
 * leaves *out unspecified) when it does not fit.
 */
#ifndef TG_RUNTIME_CHECKED_H
#define TG_RUNTIME_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG__MAX_BYTES ((size_t)PTRDIFF_MAX)

/* a * b for sizes. */
static inline bool tg__mul_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* a + b for sizes. */
static inline bool tg__add_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* a * b for signed counts (either may be negative; false on overflow). */
static inline bool tg__mul_i64(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* a + b for signed counts. */
static inline bool tg__add_i64(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* n rounded up to a multiple of align (a power of two). */
static inline bool tg__round_up_size(size_t n, size_t align, size_t *out)
{
    size_t t;
    if (__builtin_add_overflow(n, align - 1, &t))
        return false;
    *out = t & ~(align - 1);
    return true;
}

/*
 * The element count of a shape of non-negative sizes. A shape with a zero
 * size has no elements whatever the other sizes are; otherwise the product
 * must fit an int64_t. false for a negative size or an overflow.
 */
static inline bool tg__numel_checked(int ndim, const int64_t *shape, int64_t *out)
{
    int64_t n = 1;
    bool overflow = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return false;
        if (shape[i] == 0) {
            *out = 0;
            return true;
        }
        overflow = overflow || __builtin_mul_overflow(n, shape[i], &n);
    }
    if (overflow)
        return false;
    *out = n;
    return true;
}

/*
 * The byte size of a shape: its element count times elem_size, at most
 * TG__MAX_BYTES. false for a negative size or when it does not fit.
 */
static inline bool tg__nbytes_checked(int ndim, const int64_t *shape, size_t elem_size,
                                      size_t *out)
{
    int64_t n;
    size_t b;
    if (!tg__numel_checked(ndim, shape, &n) || !tg__mul_size((size_t)n, elem_size, &b) ||
        b > TG__MAX_BYTES)
        return false;
    *out = b;
    return true;
}

#endif
