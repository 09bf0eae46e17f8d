/* fuzz_decode.c -- libFuzzer harness for rc_header_parse + rc_decode.
 *
 * Input layout (every byte is fuzzed):
 *   [0]  precision n = 1 + (b & 15)
 *   [1]  channels C = 1 + (b & 3)
 *   [2]  bins K = b % min(MAX_K + 1, 2^n)   (then cdf_length = K + 2)
 *   [3]  flags: bit 0 encode scratch, bit 1 decode scratch, bit 2 literal
 *        tables (cdf entries read from the input, then rc_check_tables
 *        decides), bits 3-4 offset mode (small, INT32_MIN, top of int32)
 *   then per channel: K + 1 weight bytes (or 2 * (K + 2) literal bytes) and
 *        one offset byte
 *   rest: a container (header + payload) as rc.h describes.
 *
 * Properties checked (abort on violation; ASan/UBSan catch the rest):
 *   - parsing and decoding never read outside the input, never hang;
 *   - decoding with and without scratch returns the same status and, on
 *     success, the same symbols;
 *   - a container that decodes re-encodes to exactly the same bytes.
 *
 * Build with -DRC_FUZZ_SEED_MAIN for a program that writes valid seed
 * inputs: fuzz_seeds OUT_DIR (see native/Makefile, target fuzz-seeds). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rc.h"

#define MAX_K 62
#define MAX_L (MAX_K + 2)
#define MAX_C 4
#define MAX_SYMBOLS 4096

typedef struct fuzz_tables {
  int32_t cdf[MAX_C * MAX_L];
  int32_t cdf_length[MAX_C];
  int32_t offset[MAX_C];
  rc_tables t;
  int flags;
} fuzz_tables;

/* Builds tables from the front of the input; returns bytes used, or 0 when
 * the input is too short or the tables are rejected. */
static size_t read_tables(const uint8_t *data, size_t size, fuzz_tables *ft) {
  uint32_t n, channels, k, c, j;
  size_t pos = 4;
  if (size < 4) return 0;
  n = 1 + (data[0] & 15u);
  channels = 1 + (data[1] & 3u);
  k = data[2] % ((1u << n) < MAX_K + 1 ? (1u << n) : MAX_K + 1);
  ft->flags = data[3];
  memset(ft->cdf, 0, sizeof(ft->cdf));
  for (c = 0; c < channels; ++c) {
    int32_t *row = ft->cdf + c * MAX_L;
    if (ft->flags & 4) {
      /* Literal entries: tests rc_check_tables on arbitrary rows. */
      for (j = 0; j < k + 2; ++j) {
        if (pos + 2 > size) return 0;
        row[j] = (int32_t)(data[pos] | (data[pos + 1] << 8));
        if (data[pos + 1] == 0xFF) row[j] = -row[j];
        pos += 2;
      }
    } else {
      /* Weights: every bin gets 1 plus a share of the rest. */
      uint32_t weights[MAX_K + 1], total = 0, left = (1u << n) - (k + 1);
      for (j = 0; j <= k; ++j) {
        weights[j] = pos < size ? data[pos] : 1;
        ++pos;
        total += weights[j];
      }
      row[0] = 0;
      for (j = 0; j <= k; ++j) {
        const uint32_t extra =
            total ? (uint32_t)((uint64_t)left * weights[j] / total) : 0;
        row[j + 1] = row[j] + 1 + (int32_t)extra;
      }
      row[k + 1] = (int32_t)(1u << n); /* the escape takes the remainder */
    }
    ft->cdf_length[c] = (int32_t)k + 2;
    {
      const int32_t b = pos < size ? (int8_t)data[pos] : 0;
      switch ((ft->flags >> 3) & 3) {
        case 0:
          ft->offset[c] = b;
          break;
        case 1:
          ft->offset[c] = INT32_MIN + (b & 0x7F);
          break;
        default: {
          /* Near the top: offset + K - 1 in [INT32_MAX - 1, INT32_MAX + 2],
           * so some of these make rc_check_tables refuse. */
          int64_t o = (int64_t)INT32_MAX - k + (b & 0x3) - 1;
          ft->offset[c] = (int32_t)(o > INT32_MAX ? INT32_MAX : o);
          break;
        }
      }
      ++pos;
    }
  }
  ft->t.cdf = ft->cdf;
  ft->t.cdf_length = ft->cdf_length;
  ft->t.offset = ft->offset;
  ft->t.num_channels = channels;
  ft->t.cdf_stride = MAX_L;
  ft->t.precision = n;
  if (rc_check_tables(&ft->t) != RC_OK) return 0;
  return pos <= size ? pos : 0;
}

static int32_t g_dec[MAX_SYMBOLS], g_dec2[MAX_SYMBOLS];
static uint64_t g_enc_scratch[MAX_C * MAX_L * 2];
static uint16_t g_dec_scratch[MAX_C << RC_LUT_BITS];
static uint8_t g_reenc[RC_MAX_HEADER_SIZE + 8 * MAX_SYMBOLS + 16];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_tables ft;
  rc_header h, h2;
  const uint8_t *in;
  size_t used, in_size, payload_size, reenc_size;
  rc_status s1, s2;
  used = read_tables(data, size, &ft);
  if (used == 0) return 0;
  in = data + used;
  in_size = size - used;
  /* Copy the container so ASan sees its exact end (libFuzzer's buffer is
   * exact too, but the tables' prefix sits in front of it). */
  {
    uint8_t *copy = (uint8_t *)malloc(in_size ? in_size : 1);
    if (copy == NULL) return 0;
    memcpy(copy, in, in_size);
    in = copy;
  }
  if (rc_header_parse(in, in_size, &h) != RC_OK ||
      h.num_symbols > MAX_SYMBOLS ||
      h.dims[h.rank - 1] != ft.t.num_channels) {
    /* Still run the payload decoder on whatever follows the tables. */
    s1 = rc_decode(&ft.t, in, in_size, 0, g_dec, MAX_SYMBOLS / 4, NULL, 0);
    (void)s1;
    free((void *)in);
    return 0;
  }
  payload_size = in_size - h.header_size;
  s1 = rc_decode(&ft.t, in + h.header_size, payload_size, h.check_seed,
                 g_dec, (size_t)h.num_symbols, NULL, 0);
  s2 = rc_decode(&ft.t, in + h.header_size, payload_size, h.check_seed,
                 g_dec2, (size_t)h.num_symbols, g_dec_scratch,
                 rc_decode_scratch_size(&ft.t));
  if (s1 != s2) abort();
  if (s1 == RC_OK) {
    if (memcmp(g_dec, g_dec2, (size_t)h.num_symbols * sizeof(int32_t)) != 0) {
      abort();
    }
    /* Bijection: the header and payload re-encode to the input. */
    h2 = h;
    if (rc_header_write(&h2, g_reenc, sizeof(g_reenc)) != RC_OK ||
        h2.header_size != h.header_size ||
        h2.check_seed != h.check_seed ||
        memcmp(g_reenc, in, h.header_size) != 0) {
      abort();
    }
    if (rc_encode(&ft.t, g_dec, (size_t)h.num_symbols, h.check_seed,
                  g_reenc + h.header_size, sizeof(g_reenc) - h.header_size,
                  &reenc_size, (ft.flags & 1) ? g_enc_scratch : NULL,
                  rc_encode_scratch_size(&ft.t)) != RC_OK ||
        reenc_size != payload_size ||
        memcmp(g_reenc + h.header_size, in + h.header_size, payload_size) !=
            0) {
      abort();
    }
  }
  free((void *)in);
  return 0;
}

#ifdef RC_FUZZ_SEED_MAIN
/* Writes seed inputs: table prefixes followed by valid containers. */
#include <stdio.h>

static uint64_t g_rng = 42;
static uint32_t rng_below(uint32_t n) {
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (uint32_t)((z ^ (z >> 31)) % n);
}

int main(int argc, char **argv) {
  static uint8_t buf[8 * MAX_SYMBOLS + 1024];
  static int32_t sym[MAX_SYMBOLS];
  int seed;
  if (argc != 2) {
    fprintf(stderr, "usage: fuzz_seeds OUT_DIR\n");
    return 2;
  }
  for (seed = 0; seed < 24; ++seed) {
    fuzz_tables ft;
    rc_header h;
    size_t used, pos, size, i, num;
    char path[4096];
    FILE *f;
    buf[0] = (uint8_t)(seed % 16);
    buf[1] = (uint8_t)(seed % 4);
    buf[2] = (uint8_t)rng_below(64);
    buf[3] = (uint8_t)((seed % 4) | ((seed % 3 == 2 ? 1 : 0) << 3));
    for (i = 4; i < 4 + MAX_C * (MAX_K + 2); ++i) {
      buf[i] = (uint8_t)rng_below(256);
    }
    used = read_tables(buf, 4 + MAX_C * (MAX_K + 2), &ft);
    if (used == 0) continue;
    num = ft.t.num_channels * (size_t)(seed * 7 % 40);
    for (i = 0; i < num; ++i) {
      const uint32_t c = (uint32_t)(i % ft.t.num_channels);
      const int32_t k = ft.cdf_length[c] - 2;
      sym[i] = ft.offset[c] + (int32_t)rng_below((uint32_t)k + 3) - 1;
      if (rng_below(50) == 0) sym[i] = (int32_t)(rng_below(0xFFFFFFFFu));
    }
    memset(&h, 0, sizeof(h));
    h.rank = 2;
    h.dims[0] = num / ft.t.num_channels;
    h.dims[1] = ft.t.num_channels;
    pos = used;
    if (rc_header_write(&h, buf + pos, sizeof(buf) - pos) != RC_OK) return 1;
    pos += h.header_size;
    if (rc_encode(&ft.t, sym, num, h.check_seed, buf + pos,
                  sizeof(buf) - pos, &size, NULL, 0) != RC_OK) {
      return 1;
    }
    pos += size;
    snprintf(path, sizeof(path), "%s/seed_%02d", argv[1], seed);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(buf, 1, pos, f) != pos || fclose(f) != 0) {
      fprintf(stderr, "fuzz_seeds: cannot write %s\n", path);
      return 1;
    }
  }
  return 0;
}
#endif
