/* rc_internal.h -- what the coder's source files share; not part of the API.
 *
 * The coder of rc.h is three files, one concern each:
 *   rc_tables.c     status names, the table checks, the model id
 *                   (rc.h "Tables", "Model id")
 *   rc_coder.c      the payload: rANS encode/decode of symbols, escapes,
 *                   scratch, the integrity check (rc.h "Symbols", "Payload")
 *   rc_container.c  the header and whole containers (rc.h "Container")
 * This header holds only what more than one of them needs: RC_ASSERT, the
 * little-endian loads and stores, MurmurHash3's fmix64, and the entry points
 * that skip the table check, for the container, which checks the tables
 * once per call. Include it after rc.h; never from outside native/rc_*.c.
 */
#ifndef HECSB_JAX_NATIVE_RC_INTERNAL_H_
#define HECSB_JAX_NATIVE_RC_INTERNAL_H_

#include <stddef.h>
#include <stdint.h>

#include "rc.h"

#ifdef RC_DEBUG
#include <stdlib.h>
#define RC_ASSERT(cond) \
  do {                  \
    if (!(cond)) {      \
      abort();          \
    }                   \
  } while (0)
#else
#define RC_ASSERT(cond) ((void)0)
#endif

/* C99 inline; MSVC's C compiler spells it __inline. */
#if defined(_MSC_VER) && !defined(__cplusplus)
#define RC_INLINE static __inline
#else
#define RC_INLINE static inline
#endif

/* ---------------------------------------------------------------------- */
/* Little-endian loads and stores, byte by byte: no alignment or host-order
 * assumptions (compilers turn these into single moves). */

RC_INLINE uint32_t load_le32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
         ((uint32_t)p[3] << 24);
}

RC_INLINE uint64_t load_le64(const uint8_t *p) {
  return (uint64_t)load_le32(p) | ((uint64_t)load_le32(p + 4) << 32);
}

RC_INLINE void store_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

RC_INLINE void store_le64(uint8_t *p, uint64_t v) {
  store_le32(p, (uint32_t)v);
  store_le32(p + 4, (uint32_t)(v >> 32));
}

/* MurmurHash3's 64-bit finalizer: the payload check (rc_coder.c) and the
 * model id (rc_tables.c) both end with it. */
RC_INLINE uint64_t fmix64(uint64_t z) {
  z ^= z >> 33;
  z *= 0xFF51AFD7ED558CCDull;
  z ^= z >> 33;
  z *= 0xC4CEB9FE1A85EC53ull;
  z ^= z >> 33;
  return z;
}

/* ---------------------------------------------------------------------- */
/* Entry points without the table check (rc_container.c calls these after
 * its own rc_check_tables). */

/* rc_model_id without the checks (rc_tables.c).
 * REQUIRES: rc_check_tables(t) == RC_OK; id != NULL. */
void rc_model_id_unchecked(const rc_tables *t, uint8_t id[RC_MODEL_ID_SIZE]);

/* rc_encode after its argument and table checks (rc_coder.c).
 * REQUIRES: rc_check_tables(t) == RC_OK; out, out_size non-NULL; symbols
 * non-NULL unless num_symbols == 0. */
rc_status rc_encode_unchecked(const rc_tables *t, const int32_t *symbols,
                              size_t num_symbols, uint32_t check_seed,
                              uint8_t *out, size_t capacity,
                              size_t *out_size, void *scratch,
                              size_t scratch_size);

/* rc_decode after its argument and table checks (rc_coder.c).
 * REQUIRES: rc_check_tables(t) == RC_OK; in non-NULL unless size == 0;
 * symbols non-NULL unless num_symbols == 0. */
rc_status rc_decode_unchecked(const rc_tables *t, const uint8_t *in,
                              size_t size, uint32_t check_seed,
                              int32_t *symbols, size_t num_symbols,
                              void *scratch, size_t scratch_size);

#endif  /* HECSB_JAX_NATIVE_RC_INTERNAL_H_ */
