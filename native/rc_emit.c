/* rc_emit.c -- writes containers for fixed symbols and tables to a file.
 *
 * Used by `make cross-test`: the x86-64 and the aarch64 (qemu) builds must
 * write identical bytes. Every case is built from integer arithmetic only
 * (own PRNG), so the inputs are the same on every host; it then decodes each
 * container back and exits non-zero on any mismatch.
 *
 * Usage: rc_emit OUT_FILE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rc.h"

#define MAX_L 70
#define MAX_N 20000

static uint64_t g_rng = 0x0123456789ABCDEFull;
static uint32_t rng_below(uint32_t n) {
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (uint32_t)((z ^ (z >> 31)) % n);
}

static int32_t g_cdf[8 * MAX_L], g_len[8], g_off[8];
static int32_t g_sym[MAX_N], g_dec[MAX_N];
static uint8_t g_out[RC_MAX_HEADER_SIZE + 8 * MAX_N + 16];
static uint64_t g_enc_scratch[8 * MAX_L * 2];
static uint16_t g_dec_scratch[8 << RC_LUT_BITS];

/* One case: C channels, K bins, precision n, N symbols; some escapes. */
static int emit_case(FILE *f, uint32_t channels, uint32_t k, uint32_t n,
                     size_t num) {
  rc_tables t;
  uint32_t c;
  size_t i, size;
  const uint32_t m = 1u << n;
  for (c = 0; c < channels; ++c) {
    int32_t *row = g_cdf + c * MAX_L;
    uint32_t j, left = m - (k + 1);
    row[0] = 0;
    for (j = 0; j < k; ++j) {
      const uint32_t extra = left ? rng_below(left / 2 + 1) : 0;
      left -= extra;
      row[j + 1] = row[j] + 1 + (int32_t)extra;
    }
    row[k + 1] = (int32_t)m;
    g_len[c] = (int32_t)k + 2;
    g_off[c] = (int32_t)rng_below(21) - 10;
  }
  t.cdf = g_cdf;
  t.cdf_length = g_len;
  t.offset = g_off;
  t.num_channels = channels;
  t.cdf_stride = MAX_L;
  t.precision = n;
  for (i = 0; i < num; ++i) {
    const uint32_t r = rng_below(1000);
    c = (uint32_t)(i % channels);
    g_sym[i] = g_off[c] + (int32_t)rng_below(k ? k : 1);
    if (r == 0) g_sym[i] = INT32_MIN + (int32_t)rng_below(1000);
    if (r == 1) g_sym[i] = INT32_MAX - (int32_t)rng_below(1000);
    if (r == 2) g_sym[i] = g_off[c] + (int32_t)k + (int32_t)rng_below(70000);
  }
  {
    const uint64_t dims[2] = {num / channels, channels};
    if (rc_container_encode(&t, dims, 2, g_sym, num, g_out, sizeof(g_out),
                            &size, (n % 2) ? g_enc_scratch : NULL,
                            rc_encode_scratch_size(&t)) != RC_OK) {
      return 1;
    }
  }
  if (rc_container_decode(&t, g_out, size, g_dec, num,
                          (n % 3) ? g_dec_scratch : NULL,
                          rc_decode_scratch_size(&t)) != RC_OK ||
      memcmp(g_sym, g_dec, num * sizeof(int32_t)) != 0) {
    return 1;
  }
  return fwrite(g_out, 1, size, f) != size;
}

int main(int argc, char **argv) {
  FILE *f;
  uint32_t n;
  int bad = 0;
  if (argc != 2) {
    fprintf(stderr, "usage: rc_emit OUT_FILE\n");
    return 2;
  }
  f = fopen(argv[1], "wb");
  if (f == NULL) {
    fprintf(stderr, "rc_emit: cannot open %s\n", argv[1]);
    return 2;
  }
  for (n = 1; n <= RC_MAX_PRECISION; ++n) {
    const uint32_t k = (1u << n) - 1 < MAX_L - 2 ? (1u << n) - 1 : MAX_L - 2;
    bad |= emit_case(f, 1 + n % 8, k, n, (size_t)(1 + n % 8) * (100 * n));
  }
  bad |= emit_case(f, 3, 0, 4, 300);      /* every value escapes */
  bad |= emit_case(f, 8, 1, 16, MAX_N);   /* single-symbol alphabet */
  bad |= emit_case(f, 5, 60, 16, 0);      /* empty */
  if (fclose(f) != 0) bad = 1;
  if (bad) fprintf(stderr, "rc_emit: FAILED\n");
  return bad;
}
