/* fuzz_decode.c -- libFuzzer harness for the container parser and decoder
 * (rc_header_parse, rc_container_decode, rc_decode).
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
 *   - rc_container_decode agrees with parse + model id + rc_decode, and
 *     decoding with and without scratch gives the same status and symbols;
 *   - a container that decodes re-encodes (rc_container_encode) to exactly
 *     the same bytes, within rc_encode_bound.
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
  rc_header h;
  uint8_t id[RC_MODEL_ID_SIZE];
  uint8_t *in;
  size_t used, in_size, payload_size, reenc_size;
  rc_status s0, s1, s2;
  used = read_tables(data, size, &ft);
  if (used == 0) return 0;
  if (rc_model_id(&ft.t, id) != RC_OK) abort(); /* tables are valid */
  in_size = size - used;
  /* Copy the container so ASan sees its exact end (the tables' prefix sits
   * in front of it in libFuzzer's buffer). */
  in = (uint8_t *)malloc(in_size ? in_size : 1);
  if (in == NULL) return 0;
  memcpy(in, data + used, in_size);
  s0 = rc_header_parse(in, in_size, &h);
  if (rc_status_string(s0) == NULL) abort();
  if (s0 != RC_OK || h.num_symbols > MAX_SYMBOLS ||
      h.dims[h.rank - 1] != ft.t.num_channels) {
    /* Still run both decoders on whatever follows the tables. */
    s1 = rc_container_decode(&ft.t, in, in_size, g_dec, MAX_SYMBOLS / 4,
                             NULL, 0);
    if (s0 != RC_OK && s1 != s0) abort();
    s1 = rc_decode(&ft.t, in, in_size, 0, g_dec, MAX_SYMBOLS / 4, NULL, 0);
    (void)s1;
    free(in);
    return 0;
  }
  payload_size = in_size - h.header_size;
  s1 = rc_decode(&ft.t, in + h.header_size, payload_size, h.check_seed,
                 g_dec, (size_t)h.num_symbols, NULL, 0);
  s2 = rc_decode(&ft.t, in + h.header_size, payload_size, h.check_seed,
                 g_dec2, (size_t)h.num_symbols, g_dec_scratch,
                 rc_decode_scratch_size(&ft.t));
  if (s1 != s2) abort();
  if (s1 == RC_OK &&
      memcmp(g_dec, g_dec2, (size_t)h.num_symbols * sizeof(int32_t)) != 0) {
    abort();
  }
  s0 = rc_container_decode(&ft.t, in, in_size, g_dec2, (size_t)h.num_symbols,
                           (ft.flags & 2) ? g_dec_scratch : NULL,
                           rc_decode_scratch_size(&ft.t));
  if (memcmp(id, h.model_id, RC_MODEL_ID_SIZE) != 0) {
    if (s0 != RC_ERR_MODEL) abort();
  } else if (s0 != s1) {
    abort();
  } else if (s0 == RC_OK) {
    if (memcmp(g_dec, g_dec2, (size_t)h.num_symbols * sizeof(int32_t)) != 0) {
      abort();
    }
    /* Bijection: header and payload re-encode to the input. */
    if (rc_container_encode(&ft.t, h.dims, h.rank, g_dec,
                            (size_t)h.num_symbols, g_reenc, sizeof(g_reenc),
                            &reenc_size,
                            (ft.flags & 1) ? g_enc_scratch : NULL,
                            rc_encode_scratch_size(&ft.t)) != RC_OK ||
        reenc_size != in_size || memcmp(g_reenc, in, in_size) != 0 ||
        payload_size > rc_encode_bound((size_t)h.num_symbols)) {
      abort();
    }
  }
  if (s1 == RC_OK && memcmp(id, h.model_id, RC_MODEL_ID_SIZE) != 0) {
    /* The payload alone still re-encodes to itself. */
    if (rc_encode(&ft.t, g_dec, (size_t)h.num_symbols, h.check_seed,
                  g_reenc, sizeof(g_reenc), &reenc_size, NULL, 0) != RC_OK ||
        reenc_size != payload_size ||
        memcmp(g_reenc, in + h.header_size, payload_size) != 0) {
      abort();
    }
  }
  free(in);
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
    pos = used;
    {
      const uint64_t dims[2] = {num / ft.t.num_channels, ft.t.num_channels};
      if (rc_container_encode(&ft.t, dims, 2, sym, num, buf + pos,
                              sizeof(buf) - pos, &size, NULL, 0) != RC_OK) {
        return 1;
      }
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
