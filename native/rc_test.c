/* rc_test.c -- edge-case and property tests for the coder (rc.h). Exits
 * non-zero on any failure. Deterministic (own PRNG), so it behaves the same
 * on every host.
 * Build and run: make -C native test (or asan, cross-test). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rc.h"

static int g_failures = 0;

#define CHECK(cond)                                                 \
  do {                                                              \
    if (!(cond)) {                                                  \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
              #cond);                                               \
      ++g_failures;                                                 \
    }                                                               \
  } while (0)

#define CHECK_STATUS(expr, want)                                          \
  do {                                                                    \
    rc_status got_ = (expr);                                              \
    if (got_ != (want)) {                                                 \
      fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s)\n",       \
              __FILE__, __LINE__, #expr, (int)got_, rc_status_string(got_), \
              (int)(want), rc_status_string(want));                      \
      ++g_failures;                                                       \
    }                                                                     \
  } while (0)

/* splitmix64: tiny, portable, deterministic. */
static uint64_t g_rng = 0x243F6A8885A308D3ull;
static uint64_t rng_next(void) {
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static uint32_t rng_below(uint32_t n) { return (uint32_t)(rng_next() % n); }

/* ---------------------------------------------------------------------- */
/* Test tables: C channels, K_c regular bins, random frequencies. */

#define MAX_C 8
#define MAX_L 300

typedef struct test_tables {
  int32_t cdf[MAX_C * MAX_L];
  int32_t cdf_length[MAX_C];
  int32_t offset[MAX_C];
  rc_tables t;
} test_tables;

/* Random CDF with k regular bins + escape; skewed so some bins get freq 1. */
static void make_row(int32_t *row, uint32_t k, uint32_t precision,
                     int skew) {
  const uint32_t m = 1u << precision;
  uint32_t bins = k + 1, i;
  uint32_t weights[MAX_L];
  uint64_t total = 0;
  uint32_t left = m - bins; /* mass above the mandatory 1 per bin */
  for (i = 0; i < bins; ++i) {
    uint32_t w = 1 + rng_below(1000);
    if (skew) w = (i == bins / 2) ? 100000 : rng_below(3);
    weights[i] = w;
    total += w;
  }
  row[0] = 0;
  for (i = 0; i < bins; ++i) {
    const uint64_t share = (uint64_t)left * weights[i];
    const uint32_t extra = (uint32_t)(share / (total ? total : 1));
    row[i + 1] = row[i] + 1 + (int32_t)extra;
  }
  /* Give the rounding remainder to the largest-weight bin's successor. */
  row[bins] = (int32_t)m;
  for (i = bins; i > 1 && row[i - 1] >= row[i]; --i) row[i - 1] = row[i] - 1;
}

static void make_tables(test_tables *tt, uint32_t channels, uint32_t k,
                        uint32_t precision, int skew) {
  uint32_t c;
  memset(tt, 0, sizeof(*tt));
  for (c = 0; c < channels; ++c) {
    uint32_t kc = k > 0 && c % 2 == 1 ? k - rng_below(k) : k;
    if (kc + 1 > (1u << precision)) kc = (1u << precision) - 1;
    make_row(tt->cdf + c * MAX_L, kc, precision, skew);
    tt->cdf_length[c] = (int32_t)kc + 2;
    tt->offset[c] = (int32_t)rng_below(41) - 20;
  }
  tt->t.cdf = tt->cdf;
  tt->t.cdf_length = tt->cdf_length;
  tt->t.offset = tt->offset;
  tt->t.num_channels = channels;
  tt->t.cdf_stride = MAX_L;
  tt->t.precision = precision;
}

/* Draws symbols from the tables' own distribution; escapes become values
 * a few steps outside the table. */
static void draw_symbols(const test_tables *tt, int32_t *sym, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i) {
    const uint32_t c = (uint32_t)(i % tt->t.num_channels);
    const int32_t *row = tt->cdf + c * MAX_L;
    const int32_t k = tt->cdf_length[c] - 2;
    const int32_t u = (int32_t)rng_below(1u << tt->t.precision);
    int32_t s = 0;
    while (row[s + 1] <= u) ++s;
    if (s == k) {
      sym[i] = rng_below(2) ? tt->offset[c] - 1 - (int32_t)rng_below(5)
                            : tt->offset[c] + k + (int32_t)rng_below(5);
    } else {
      sym[i] = tt->offset[c] + s;
    }
  }
}

static double ideal_bits(const test_tables *tt, const int32_t *sym,
                         size_t n) {
  double bits = 0;
  size_t i;
  for (i = 0; i < n; ++i) {
    const uint32_t c = (uint32_t)(i % tt->t.num_channels);
    const int32_t *row = tt->cdf + c * MAX_L;
    const int64_t k = tt->cdf_length[c] - 2;
    int64_t idx = (int64_t)sym[i] - tt->offset[c];
    if (idx < 0 || idx >= k) idx = k;
    bits -= log2((double)(row[idx + 1] - row[idx]) /
                 (double)(1u << tt->t.precision));
  }
  return bits;
}

/* ---------------------------------------------------------------------- */

#define BIG_N 200000
static int32_t g_sym[BIG_N];
static int32_t g_dec[BIG_N];
static uint8_t g_buf[8 * BIG_N + 64];
static uint8_t g_buf2[8 * BIG_N + 64];

/* Scratch big enough for MAX_C x MAX_L tables (8-byte aligned). */
static uint64_t g_enc_scratch[MAX_C * MAX_L * 2];
static uint16_t g_dec_scratch[MAX_C << RC_LUT_BITS];

/* Encodes and decodes with and without scratch; checks that all four
 * combinations agree, that the decoded symbols are the input, and that
 * re-encoding reproduces the bytes. Returns the payload size (0 on
 * failure). The payload is left in g_buf. */
static size_t roundtrip(const test_tables *tt, const int32_t *sym, size_t n) {
  size_t size = 0, size2 = 0;
  const size_t es = rc_encode_scratch_size(&tt->t);
  const size_t ds = rc_decode_scratch_size(&tt->t);
  rc_status s;
  CHECK(es > 0 && es <= sizeof(g_enc_scratch));
  CHECK(ds > 0 && ds <= sizeof(g_dec_scratch));
  s = rc_encode(&tt->t, sym, n, 77, g_buf, rc_encode_bound(n), &size, NULL, 0);
  CHECK_STATUS(s, RC_OK);
  if (s != RC_OK) return 0;
  CHECK(size >= RC_EMPTY_PAYLOAD_SIZE && size % 4 == 0);
  CHECK_STATUS(rc_encode(&tt->t, sym, n, 77, g_buf2, rc_encode_bound(n),
                         &size2, g_enc_scratch, es),
               RC_OK);
  CHECK(size2 == size && memcmp(g_buf, g_buf2, size) == 0);
  memset(g_dec, 0x5A, n * sizeof(int32_t));
  CHECK_STATUS(rc_decode(&tt->t, g_buf, size, 77, g_dec, n, NULL, 0), RC_OK);
  CHECK(memcmp(sym, g_dec, n * sizeof(int32_t)) == 0);
  memset(g_dec, 0x5A, n * sizeof(int32_t));
  CHECK_STATUS(rc_decode(&tt->t, g_buf, size, 77, g_dec, n, g_dec_scratch, ds),
               RC_OK);
  CHECK(memcmp(sym, g_dec, n * sizeof(int32_t)) == 0);
  CHECK_STATUS(rc_encode(&tt->t, g_dec, n, 77, g_buf2, rc_encode_bound(n),
                         &size2, NULL, 0),
               RC_OK);
  CHECK(size2 == size && memcmp(g_buf, g_buf2, size) == 0);
  /* Another seed is another stream (and fails the check). */
  if (n > 0) {
    CHECK(rc_decode(&tt->t, g_buf, size, 78, g_dec, n, NULL, 0) ==
          RC_ERR_CORRUPT);
  }
  return size;
}

static void test_scratch_arguments(void) {
  test_tables tt;
  size_t size;
  int32_t one = 0;
  make_tables(&tt, 2, 10, 12, 0);
  CHECK(rc_encode_scratch_size(&tt.t) == 2 * MAX_L * 16);
  CHECK(rc_decode_scratch_size(&tt.t) == (2u << RC_LUT_BITS) * 2);
  CHECK(rc_encode_scratch_size(NULL) == 0);
  CHECK_STATUS(rc_encode(&tt.t, &one, 1, 0, g_buf, 64, &size, g_enc_scratch,
                         rc_encode_scratch_size(&tt.t) - 1),
               RC_ERR_ARG);
  CHECK_STATUS(rc_encode(&tt.t, &one, 1, 0, g_buf, 64, &size,
                         (uint8_t *)g_enc_scratch + 4,
                         rc_encode_scratch_size(&tt.t)),
               RC_ERR_ARG);
  CHECK_STATUS(rc_decode(&tt.t, g_buf, 8, 0, NULL, 0, g_dec_scratch, 1),
               RC_ERR_ARG);
  /* Precision below RC_LUT_BITS: one bucket per slot. */
  make_tables(&tt, 2, 3, 3, 0);
  CHECK(rc_decode_scratch_size(&tt.t) == (2u << 3) * 2);
}

static void test_check_cdf(void) {
  const int32_t good[] = {0, 1, 5, 16};
  const int32_t nonzero_start[] = {1, 5, 16};
  const int32_t flat[] = {0, 5, 5, 16};
  const int32_t falling[] = {0, 9, 5, 16};
  const int32_t short_end[] = {0, 5, 15};
  CHECK_STATUS(rc_check_cdf(good, 4, 4), RC_OK);
  CHECK_STATUS(rc_check_cdf(good, 4, 5), RC_ERR_TABLE);
  CHECK_STATUS(rc_check_cdf(good, 4, 0), RC_ERR_ARG);
  CHECK_STATUS(rc_check_cdf(good, 4, 17), RC_ERR_ARG);
  CHECK_STATUS(rc_check_cdf(good, 1, 4), RC_ERR_TABLE);
  CHECK_STATUS(rc_check_cdf(NULL, 4, 4), RC_ERR_ARG);
  CHECK_STATUS(rc_check_cdf(nonzero_start, 3, 4), RC_ERR_TABLE);
  CHECK_STATUS(rc_check_cdf(flat, 4, 4), RC_ERR_TABLE);
  CHECK_STATUS(rc_check_cdf(falling, 4, 4), RC_ERR_TABLE);
  CHECK_STATUS(rc_check_cdf(short_end, 3, 4), RC_ERR_TABLE);
}

static void test_check_tables(void) {
  test_tables tt;
  make_tables(&tt, 3, 10, 12, 0);
  CHECK_STATUS(rc_check_tables(&tt.t), RC_OK);
  CHECK_STATUS(rc_check_tables(NULL), RC_ERR_ARG);
  tt.cdf_length[1] = MAX_L + 1;
  CHECK_STATUS(rc_check_tables(&tt.t), RC_ERR_TABLE);
  tt.cdf_length[1] = 1;
  CHECK_STATUS(rc_check_tables(&tt.t), RC_ERR_TABLE);
  make_tables(&tt, 3, 10, 12, 0);
  tt.offset[2] = INT32_MAX - 8; /* last value INT32_MAX - 8 + 9 overflows */
  CHECK_STATUS(rc_check_tables(&tt.t), RC_ERR_TABLE);
  tt.offset[2] = INT32_MAX - 9; /* last value is exactly INT32_MAX */
  CHECK_STATUS(rc_check_tables(&tt.t), RC_OK);
  tt.t.num_channels = 0;
  CHECK_STATUS(rc_check_tables(&tt.t), RC_ERR_ARG);
  tt.t.num_channels = 3;
  tt.t.precision = 17;
  CHECK_STATUS(rc_check_tables(&tt.t), RC_ERR_ARG);
}

static void test_zero_and_one_symbol(void) {
  test_tables tt;
  size_t size = 0;
  int32_t one = 3, out = 0;
  make_tables(&tt, 1, 10, 16, 0);
  CHECK_STATUS(rc_encode(&tt.t, NULL, 0, 0, g_buf, 64, &size, NULL, 0), RC_OK);
  CHECK(size == RC_EMPTY_PAYLOAD_SIZE);
  CHECK_STATUS(rc_decode(&tt.t, g_buf, size, 0, NULL, 0, NULL, 0), RC_OK);
  /* Claiming a symbol the stream does not hold. */
  CHECK(rc_decode(&tt.t, g_buf, size, 0, &out, 1, NULL, 0) != RC_OK);
  CHECK_STATUS(rc_decode(&tt.t, g_buf, size + 4, 0, NULL, 0, NULL, 0),
               RC_ERR_TRAILING);
  CHECK_STATUS(rc_decode(&tt.t, g_buf, 7, 0, NULL, 0, NULL, 0),
               RC_ERR_TRUNCATED);
  CHECK(roundtrip(&tt, &one, 1) > 0);
}

static void test_random_roundtrips(void) {
  test_tables tt;
  uint32_t precision;
  for (precision = 1; precision <= 16; ++precision) {
    const uint32_t channels = 1 + precision % MAX_C;
    const uint32_t k_max = precision < 9 ? (1u << precision) - 1 : MAX_L - 2;
    const uint32_t k = precision == 1 ? 1 : 1 + rng_below(k_max);
    const size_t n = (size_t)channels * (1 + rng_below(5000));
    make_tables(&tt, channels, k, precision, 0);
    draw_symbols(&tt, g_sym, n);
    CHECK(roundtrip(&tt, g_sym, n) > 0);
  }
}

static void test_freq_one_symbols_and_max_precision(void) {
  test_tables tt;
  size_t i, n = 0;
  make_tables(&tt, 1, 200, 16, 1); /* skewed: most bins have freq 1 or 2 */
  for (i = 0; i + 1 < (size_t)tt.cdf_length[0] && n < 5000; ++i) {
    if (tt.cdf[i + 1] - tt.cdf[i] == 1) g_sym[n++] = tt.offset[0] + (int32_t)i;
  }
  CHECK(n > 50);
  CHECK(roundtrip(&tt, g_sym, n) > 0);
  /* Most probable bin over and over: ~0 bits each. */
  for (i = 0; i < 100000; ++i) g_sym[i] = tt.offset[0] + 100;
  CHECK(roundtrip(&tt, g_sym, 100000) > 0);
}

static void test_single_symbol_alphabet(void) {
  /* K = 1: one value with freq M - 1, escape with freq 1. */
  static const int32_t row[3] = {0, 65535, 65536};
  const int32_t len = 3, off = 7;
  rc_tables t = {row, &len, &off, 1, 3, 16};
  size_t i, size;
  for (i = 0; i < 50000; ++i) g_sym[i] = 7;
  CHECK_STATUS(rc_encode(&t, g_sym, 50000, 0, g_buf, rc_encode_bound(50000),
                         &size, NULL, 0),
               RC_OK);
  CHECK(size <= 16); /* 50000 * 2.2e-5 bits: nothing but the state */
  CHECK_STATUS(rc_decode(&t, g_buf, size, 0, g_dec, 50000, NULL, 0), RC_OK);
  CHECK(memcmp(g_sym, g_dec, 50000 * sizeof(int32_t)) == 0);
  /* K = 0: every value escapes. */
  {
    static const int32_t esc_row[2] = {0, 2};
    const int32_t esc_len = 2;
    rc_tables te = {esc_row, &esc_len, &off, 1, 2, 1};
    const int32_t vals[6] = {0, 7, 8, INT32_MIN, INT32_MAX, -5};
    int32_t dec[6];
    CHECK_STATUS(rc_encode(&te, vals, 6, 0, g_buf, rc_encode_bound(6), &size,
                           NULL, 0),
                 RC_OK);
    CHECK_STATUS(rc_decode(&te, g_buf, size, 0, dec, 6, NULL, 0), RC_OK);
    CHECK(memcmp(vals, dec, sizeof(vals)) == 0);
  }
}

static void test_escape_extremes(void) {
  test_tables tt;
  static const int32_t vals[] = {INT32_MIN, INT32_MIN + 1, -(1 << 30), -1,
                                 0, 1, 1 << 30, INT32_MAX - 1, INT32_MAX,
                                 -21, -20, -19, 25, 30, 31, 65536, -65537};
  const size_t nv = sizeof(vals) / sizeof(vals[0]);
  const int32_t offsets[] = {INT32_MIN, -20, 0, INT32_MAX - 49};
  size_t o, i;
  for (o = 0; o < 4; ++o) {
    make_tables(&tt, 1, 50, 16, 0);
    tt.cdf_length[0] = 52;
    make_row(tt.cdf, 50, 16, 0);
    tt.offset[0] = offsets[o];
    CHECK_STATUS(rc_check_tables(&tt.t), RC_OK);
    for (i = 0; i < 3000; ++i) g_sym[i] = vals[i % nv];
    CHECK(roundtrip(&tt, g_sym, 3000) > 0);
  }
}

static void test_size_close_to_ideal(void) {
  test_tables tt;
  const size_t n = BIG_N;
  size_t size;
  double ideal;
  make_tables(&tt, 4, 30, 16, 0);
  draw_symbols(&tt, g_sym, n);
  /* Escapes add raw bits the ideal does not count; keep only in-range. */
  {
    size_t i;
    for (i = 0; i < n; ++i) {
      const uint32_t c = (uint32_t)(i % 4);
      const int32_t top = tt.offset[c] + tt.cdf_length[c] - 2;
      if (g_sym[i] < tt.offset[c] || g_sym[i] >= top) {
        g_sym[i] = tt.offset[c];
      }
    }
  }
  ideal = ideal_bits(&tt, g_sym, n);
  size = roundtrip(&tt, g_sym, n);
  CHECK(size > 0);
  CHECK((double)size <= 1.001 * ideal / 8 + RC_EMPTY_PAYLOAD_SIZE + 4);
}

static void test_truncation_and_bit_flips(void) {
  test_tables tt;
  const size_t n = 600;
  size_t size, cut, bit;
  make_tables(&tt, 3, 20, 14, 0);
  draw_symbols(&tt, g_sym, n);
  size = roundtrip(&tt, g_sym, n);
  CHECK(size > 16);
  for (cut = 0; cut < size; ++cut) {
    /* A copy of just the prefix, so ASan catches any read past it. */
    uint8_t *p = (uint8_t *)malloc(cut ? cut : 1);
    memcpy(p, g_buf, cut);
    CHECK(rc_decode(&tt.t, p, cut, 77, g_dec, n, NULL, 0) != RC_OK);
    free(p);
  }
  CHECK_STATUS(rc_decode(&tt.t, g_buf, size + 1, 77, g_dec, n, NULL, 0),
               RC_ERR_TRAILING);
  for (bit = 0; bit < size * 8; ++bit) {
    g_buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    CHECK(rc_decode(&tt.t, g_buf, size, 77, g_dec, n, NULL, 0) != RC_OK);
    g_buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
  }
  CHECK_STATUS(rc_decode(&tt.t, g_buf, size, 77, g_dec, n, NULL, 0), RC_OK);
  CHECK(rc_decode(&tt.t, g_buf, size, 77, g_dec, n - 1, NULL, 0) != RC_OK);
  CHECK(rc_decode(&tt.t, g_buf, size, 77, g_dec, n + 1, NULL, 0) != RC_OK);
}

static void test_output_capacity(void) {
  test_tables tt;
  const size_t n = 500;
  size_t need, cap, size;
  make_tables(&tt, 2, 40, 16, 0);
  draw_symbols(&tt, g_sym, n);
  g_sym[7] = INT32_MIN; /* an escape too */
  need = roundtrip(&tt, g_sym, n);
  CHECK(need > 0);
  for (cap = 0; cap < need; ++cap) {
    memset(g_buf2, 0xA5, need + 64);
    CHECK_STATUS(rc_encode(&tt.t, g_sym, n, 0, g_buf2, cap, &size, NULL, 0),
                 RC_ERR_OVERFLOW);
    CHECK(size == 0);
    {
      size_t j;
      int clean = 1;
      for (j = cap; j < need + 64; ++j) clean &= g_buf2[j] == 0xA5;
      CHECK(clean);
    }
  }
  CHECK_STATUS(rc_encode(&tt.t, g_sym, n, 0, g_buf2, need, &size, NULL, 0),
               RC_OK);
  CHECK(size == need);
  CHECK(rc_encode_bound((size_t)-1) == 0);
}

static void test_header(void) {
  rc_header h, p;
  uint8_t buf[RC_MAX_HEADER_SIZE];
  size_t cut;
  memset(&h, 0, sizeof(h));
  memcpy(h.model_id, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
  h.rank = 3;
  h.dims[0] = 2;
  h.dims[1] = 300;
  h.dims[2] = 48;
  CHECK_STATUS(rc_header_write(&h, buf, sizeof(buf)), RC_OK);
  CHECK(h.header_size == 14 + 1 + 2 + 1);
  CHECK(memcmp(buf, "HJRC\x01", 5) == 0);
  CHECK(buf[15] == 0xAC && buf[16] == 0x02); /* 300 = 0b10_0101100 */
  CHECK_STATUS(rc_header_parse(buf, h.header_size, &p), RC_OK);
  CHECK(p.rank == 3 && p.dims[1] == 300 && p.num_symbols == 2 * 300 * 48);
  CHECK(p.header_size == h.header_size);
  CHECK(memcmp(p.model_id, h.model_id, 8) == 0);
  for (cut = 0; cut < h.header_size; ++cut) {
    CHECK_STATUS(rc_header_parse(buf, cut, &p), RC_ERR_TRUNCATED);
  }
  CHECK_STATUS(rc_header_write(&h, buf, h.header_size - 1), RC_ERR_OVERFLOW);
  buf[0] = 'X';
  CHECK_STATUS(rc_header_parse(buf, h.header_size, &p), RC_ERR_MAGIC);
  CHECK_STATUS(rc_header_parse(buf, 2, &p), RC_ERR_MAGIC);
  buf[0] = 'H';
  buf[4] = 2;
  CHECK_STATUS(rc_header_parse(buf, h.header_size, &p), RC_ERR_VERSION);
  buf[4] = 1;
  buf[13] = 0;
  CHECK_STATUS(rc_header_parse(buf, h.header_size, &p), RC_ERR_CORRUPT);
  buf[13] = RC_MAX_RANK + 1;
  CHECK_STATUS(rc_header_parse(buf, h.header_size, &p), RC_ERR_CORRUPT);
  buf[13] = 3;
  /* Non-minimal varint: 2 written as 0x82 0x00. */
  {
    uint8_t nm[20];
    memcpy(nm, buf, 14);
    nm[13] = 1;
    nm[14] = 0x82;
    nm[15] = 0x00;
    CHECK_STATUS(rc_header_parse(nm, 16, &p), RC_ERR_CORRUPT);
    nm[14] = 0x00; /* zero is one byte 0x00 */
    CHECK_STATUS(rc_header_parse(nm, 15, &p), RC_OK);
    CHECK(p.num_symbols == 0);
  }
  /* Too many symbols: 2^31 * 2^31. */
  h.rank = 2;
  h.dims[0] = (uint64_t)1 << 31;
  h.dims[1] = (uint64_t)1 << 31;
  CHECK_STATUS(rc_header_write(&h, buf, sizeof(buf)), RC_ERR_ARG);
  h.dims[1] = (uint64_t)1 << 30;
  CHECK_STATUS(rc_header_write(&h, buf, sizeof(buf)), RC_OK);
  buf[h.header_size - 1] = 8; /* 2^30 -> 2^31 in the top group */
  CHECK_STATUS(rc_header_parse(buf, h.header_size, &p), RC_ERR_CORRUPT);
  /* A varint needing a 10th byte (>= 2^63). */
  {
    uint8_t big[30];
    size_t j;
    memcpy(big, "HJRC\x01" "12345678\x01", 14);
    for (j = 0; j < 9; ++j) big[14 + j] = 0xFF;
    big[23] = 0x01;
    CHECK_STATUS(rc_header_parse(big, 24, &p), RC_ERR_CORRUPT);
  }
}

static void test_model_id(void) {
  /* A fixed table; the id is pinned so the definition cannot drift. */
  static const int32_t cdf[2 * 5] = {0, 3, 10, 16, 99, 0, 1, 16, 16, 16};
  static const int32_t len[2] = {4, 3}, off[2] = {-1, 5};
  /* Also computed by an independent Python rendering of the rc.h text. */
  static const uint8_t pinned[8] = {0x43, 0x40, 0xE7, 0xD0,
                                    0x5E, 0x00, 0xE7, 0x3C};
  int32_t wide[2 * 7];
  int32_t other[2 * 5];
  rc_tables t = {cdf, len, off, 2, 5, 4};
  rc_tables tw = {wide, len, off, 2, 7, 4};
  uint8_t id[8], id2[8];
  size_t i;
  CHECK_STATUS(rc_model_id(&t, id), RC_OK);
  CHECK(memcmp(id, pinned, 8) == 0);
  /* Padding and stride do not matter. */
  for (i = 0; i < 14; ++i) wide[i] = -77;
  memcpy(wide, cdf, 4 * sizeof(int32_t));
  memcpy(wide + 7, cdf + 5, 3 * sizeof(int32_t));
  CHECK_STATUS(rc_model_id(&tw, id2), RC_OK);
  CHECK(memcmp(id, id2, 8) == 0);
  /* Any valid entry, offset or the precision does. */
  memcpy(other, cdf, sizeof(other));
  other[1] = 4;
  t.cdf = other;
  CHECK_STATUS(rc_model_id(&t, id2), RC_OK);
  CHECK(memcmp(id, id2, 8) != 0);
  t.cdf = cdf;
  {
    const int32_t off2[2] = {-1, 6};
    t.offset = off2;
    CHECK_STATUS(rc_model_id(&t, id2), RC_OK);
    CHECK(memcmp(id, id2, 8) != 0);
    t.offset = off;
  }
  t.precision = 5;
  CHECK_STATUS(rc_model_id(&t, id2), RC_ERR_TABLE);
  CHECK_STATUS(rc_model_id(NULL, id2), RC_ERR_ARG);
}

static void test_container(void) {
  test_tables tt, other;
  const uint64_t dims[2] = {300, 3}, swapped[2] = {3, 300};
  size_t size, i;
  rc_header h;
  make_tables(&tt, 3, 20, 16, 0);
  make_tables(&other, 3, 20, 16, 0); /* other random frequencies */
  draw_symbols(&tt, g_sym, 900);
  CHECK_STATUS(rc_container_encode(&tt.t, dims, 2, g_sym, 900, g_buf,
                                   sizeof(g_buf), &size, NULL, 0),
               RC_OK);
  CHECK_STATUS(rc_header_parse(g_buf, size, &h), RC_OK);
  CHECK(h.num_symbols == 900 && h.rank == 2 && h.dims[1] == 3);
  {
    uint8_t id[8];
    CHECK_STATUS(rc_model_id(&tt.t, id), RC_OK);
    CHECK(memcmp(id, h.model_id, 8) == 0);
  }
  /* Same bytes as header + rc_encode with the header's seed. */
  {
    size_t payload;
    CHECK_STATUS(rc_encode(&tt.t, g_sym, 900, h.check_seed, g_buf2,
                           sizeof(g_buf2), &payload, NULL, 0),
                 RC_OK);
    CHECK(h.header_size + payload == size &&
          memcmp(g_buf + h.header_size, g_buf2, payload) == 0);
  }
  CHECK_STATUS(rc_container_decode(&tt.t, g_buf, size, g_dec, 900, NULL, 0),
               RC_OK);
  CHECK(memcmp(g_dec, g_sym, 900 * sizeof(int32_t)) == 0);
  CHECK_STATUS(rc_container_decode(&other.t, g_buf, size, g_dec, 900, NULL,
                                   0),
               RC_ERR_MODEL);
  CHECK_STATUS(rc_container_decode(&tt.t, g_buf, size, g_dec, 899, NULL, 0),
               RC_ERR_ARG);
  CHECK_STATUS(rc_container_decode(&tt.t, g_buf, size - 1, g_dec, 900, NULL,
                                   0),
               RC_ERR_TRUNCATED);
  /* Shape [3, 300] with the right model id: last dim is not C. */
  memcpy(g_buf2, g_buf, size);
  {
    rc_header f = h;
    f.dims[0] = 3;
    f.dims[1] = 300;
    CHECK_STATUS(rc_header_write(&f, g_buf2, sizeof(g_buf2)), RC_OK);
    CHECK(f.header_size == h.header_size);
  }
  CHECK_STATUS(rc_container_decode(&tt.t, g_buf2, size, g_dec, 900, NULL, 0),
               RC_ERR_CORRUPT);
  CHECK_STATUS(rc_container_encode(&tt.t, swapped, 2, g_sym, 900, g_buf,
                                   sizeof(g_buf), &size, NULL, 0),
               RC_ERR_ARG);
  CHECK_STATUS(rc_container_encode(&tt.t, dims, 2, g_sym, 899, g_buf,
                                   sizeof(g_buf), &size, NULL, 0),
               RC_ERR_ARG);
  CHECK_STATUS(rc_container_encode(&tt.t, dims, 0, g_sym, 900, g_buf,
                                   sizeof(g_buf), &size, NULL, 0),
               RC_ERR_ARG);
  for (i = 0; i < 20; ++i) {
    CHECK_STATUS(rc_container_encode(&tt.t, dims, 2, g_sym, 900, g_buf, i,
                                     &size, NULL, 0),
                 RC_ERR_OVERFLOW);
  }
  CHECK(rc_status_string(RC_ERR_MODEL)[0] != '\0');
}

int main(void) {
  test_check_cdf();
  test_check_tables();
  test_zero_and_one_symbol();
  test_random_roundtrips();
  test_freq_one_symbols_and_max_precision();
  test_single_symbol_alphabet();
  test_escape_extremes();
  test_size_close_to_ideal();
  test_truncation_and_bit_flips();
  test_output_capacity();
  test_scratch_arguments();
  test_header();
  test_model_id();
  test_container();
  if (g_failures != 0) {
    fprintf(stderr, "rc_test: %d check(s) FAILED\n", g_failures);
    return 1;
  }
  printf("rc_test: all checks passed\n");
  return 0;
}
