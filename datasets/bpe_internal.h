/*
 * bpe_internal.h: what the text converter needs of the BPE besides the
 * public calls. Private to datasets/.
 */
#ifndef TAPEGRAD_BPE_INTERNAL_H
#define TAPEGRAD_BPE_INTERNAL_H

#include "tapegrad/datasets.h"

/* The bytes of text token `id` stands for (0 for an id not in the
 * vocabulary). */
int64_t tg__bpe_token_bytes(const tg_bpe *b, uint16_t id);

#endif
