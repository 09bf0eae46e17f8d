/* rc.h -- the hecsb_jax entropy coder: rANS over integer CDF tables.
 *
 * ======================================================================
 * READ ME FIRST
 * ======================================================================
 *
 * What it is
 *   A byte-oriented, table-driven rANS coder (Duda 2013; the layout of
 *   Giesen's "rans64": 64-bit state, 32-bit output words). C99, no malloc,
 *   no globals, no I/O. The caller owns every buffer and passes its
 *   capacity; every read and write is bounds-checked and every failure is
 *   a status code. Nothing depends on host endianness or floating point,
 *   so a stream written on x86-64 decodes on aarch64 and vice versa, and
 *   both write the same bytes for the same symbols and tables.
 *
 * Tables (rc_tables)
 *   C channels. Row c of `cdf` (stride L int32 entries) holds
 *   cdf_length[c] = K_c + 2 valid entries: a strictly increasing CDF with
 *   cdf[0] = 0 and cdf[K_c + 1] = M = 2^precision (1 <= precision <= 16).
 *   Bin k in [0, K_c) is the value offset[c] + k with frequency
 *   cdf[k+1] - cdf[k] >= 1; bin K_c is the ESCAPE. Entries past
 *   cdf_length[c] are ignored. rc_check_cdf() states the rules.
 *
 * Symbols
 *   int32 array of N symbols; symbol i uses channel i % C (channels last,
 *   as in a row-major [..., C] tensor). Any int32 value can be coded: a
 *   value outside [offset, offset + K) is coded as the escape bin followed
 *   by its distance in an Elias-gamma-like code, with uniform "raw" bins:
 *     idx = value - offset               (computed in int64)
 *     d   = 2 * (-1 - idx)               if idx < 0     (d even)
 *         = 2 * (idx - K) + 1            if idx >= K    (d odd)
 *     g   = d + 1  (1 <= g < 2^34),  u = bit_length(g) - 1  (0 <= u <= 33)
 *     then: u as one uniform 6-bit bin (M = 64), then the u bits of g below
 *     its leading one, most significant first, in uniform chunks of
 *     min(16, remaining) bits.
 *   The decoder rejects u > 33 and values that do not fit in int32.
 *
 * Payload (what rc_encode writes, rc_decode reads), all little-endian
 *   bytes 0..7   : x_final, the encoder's final state (uint64 LE), in
 *                  [2^31, 2^63).
 *   bytes 8..    : 32-bit words (uint32 LE) in the order the decoder
 *                  consumes them. Length is 8 + 4 * W bytes.
 *   Decoding step for a bin with start c, frequency f at precision n:
 *     slot = x mod 2^n;  find c <= slot < c + f;  x = f * (x >> n) + slot - c
 *     if x < 2^31: x = (x << 32) | next_word
 *   The encoder starts from x_init = 2^31 + check, where check (31 bits)
 *   hashes the caller's 32-bit seed, N and the symbols:
 *     sum   = SUM_i ((uint32)v_i ^ (uint32)(i * 0x9E3779B9)) * 0x85EBCA6B
 *             (all mod 2^32; the product is a bijection of v_i for each i,
 *             so changing any one symbol always changes sum)
 *     z     = fmix64(((uint64)seed << 32 | sum)
 *                    ^ (uint64)N * 0xD6E8FEB86659FD93)
 *     check = z & 0x7FFFFFFF     (fmix64: MurmurHash3's 64-bit finalizer)
 *   A stream is valid only if, after the last symbol, x == x_init for the
 *   decoded symbols and every byte has been consumed. So coding is a
 *   bijection (a payload that decodes re-encodes to itself, byte for byte),
 *   and a damaged payload fails except with probability about 2^-31. The
 *   check matters: rANS alone maps a flip that swaps two bins of equal
 *   frequency onto another valid stream. It costs no bytes: the initial
 *   state's 31 bits are spent either way.
 *
 * Container (rc_header_write / rc_header_parse), version 1
 *   offset  size  field
 *   0       4     magic "HJRC" (0x48 0x4A 0x52 0x43)
 *   4       1     format version = 1
 *   5       8     model id of the tables, rc_model_id() (below)
 *   13      1     rank r, 1 <= r <= RC_MAX_RANK
 *   14      ...   r dims, each an unsigned LEB128 varint (7 bits per byte,
 *                 least significant group first, high bit = "more";
 *                 minimal length; value < 2^63); the product of the dims
 *                 must be < 2^62. dims[r-1] is the channel count C.
 *   then          the payload above, up to the end of the buffer, coded
 *                 with seed = FNV-1a-32 of the header bytes [0, 14 + dims),
 *                 so a damaged shape or model id fails the payload check.
 *
 * Model id (rc_model_id): 8 bytes naming the tables, equal on every host.
 *   Words (uint32; int32 as two's complement), in this order:
 *     precision, C, offset[0..C), cdf_length[0..C), then row by row the
 *     valid entries cdf[c][0..cdf_length[c])   (padding is not included)
 *   With m words, append one zero word if m is odd. Pair k is
 *   word[2k] | word[2k+1] << 32; four 64-bit lanes start at
 *   v[l] = (l + 1) * 0xD6E8FEB86659FD93 and pair k goes to lane k mod 4:
 *     v = rotl64(v ^ pair, 29) * P2                (all mod 2^64)
 *   Then, with P1 = 0x9E3779B97F4A7C15, P2 = 0xBF58476D1CE4E5B9:
 *     h = m * P1;  for l in 0..3: h = rotl64(h ^ fmix64(v[l]), 27) * P2;
 *     id = fmix64(h) as 8 bytes little-endian.
 *   Every step is a bijection of the lane for a fixed pair, so tables that
 *   differ in a single word always get different ids. Not cryptographic: it
 *   tells honest mismatches apart; it does not authenticate.
 *
 * Status codes: rc_status below; rc_status_string() names them.
 * Build with -DRC_DEBUG to turn on RC_ASSERT internal invariant checks.
 * ======================================================================
 */
#ifndef HECSB_JAX_NATIVE_RC_H_
#define HECSB_JAX_NATIVE_RC_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum rc_status {
  RC_OK = 0,
  RC_ERR_ARG = 1,       /* NULL pointer, zero channels, bad precision ... */
  RC_ERR_TABLE = 2,     /* a CDF row or offset breaks the table rules */
  RC_ERR_OVERFLOW = 3,  /* output capacity too small; nothing written past */
  RC_ERR_TRUNCATED = 4, /* input ended before the data it promised */
  RC_ERR_CORRUPT = 5,   /* input is not something these tables produce */
  RC_ERR_TRAILING = 6,  /* bytes remain after the last symbol */
  RC_ERR_MAGIC = 7,     /* container does not start with "HJRC" */
  RC_ERR_VERSION = 8,   /* container format version is not supported */
  RC_ERR_MODEL = 9      /* container made for other tables (model id) */
} rc_status;

#define RC_MAX_PRECISION 16u
#define RC_FORMAT_VERSION 1u
#define RC_MODEL_ID_SIZE 8u
#define RC_MAX_RANK 32u
/* magic(4) + version(1) + model id(8) + rank(1) + 10 bytes per dim. */
#define RC_MAX_HEADER_SIZE (14u + 10u * RC_MAX_RANK)
/* Size of the payload for zero symbols (just the final state). */
#define RC_EMPTY_PAYLOAD_SIZE 8u

/* Channel tables, borrowed from the caller (never copied or freed). */
typedef struct rc_tables {
  const int32_t *cdf;        /* [num_channels * cdf_stride]; row c starts at
                                cdf + c * cdf_stride. */
  const int32_t *cdf_length; /* [num_channels]; 2 <= cdf_length[c]
                                <= cdf_stride. */
  const int32_t *offset;     /* [num_channels]; offset[c] + K_c - 1 must fit
                                in int32. */
  uint32_t num_channels;     /* 1 <= C <= INT32_MAX. */
  uint32_t cdf_stride;       /* 2 <= L <= INT32_MAX. */
  uint32_t precision;        /* 1 <= precision <= RC_MAX_PRECISION. */
} rc_tables;

/* Parsed container header. */
typedef struct rc_header {
  uint8_t model_id[RC_MODEL_ID_SIZE];
  uint32_t rank;              /* 1 <= rank <= RC_MAX_RANK. */
  uint64_t dims[RC_MAX_RANK]; /* dims[0..rank); each < 2^63. */
  uint64_t num_symbols;       /* Set by rc_header_parse: product of dims,
                                 < 2^62. Ignored by rc_header_write. */
  size_t header_size;         /* Set by both: bytes the header occupies;
                                 the payload starts here. */
  uint32_t check_seed;        /* Set by both: FNV-1a-32 of the header
                                 bytes; pass it to rc_encode/rc_decode. */
} rc_header;

/* A short, static, human-readable name for a status code. Never NULL. */
const char *rc_status_string(rc_status status);

/* Checks one CDF row: length >= 2, 1 <= precision <= 16, cdf[0] == 0,
 * strictly increasing (every bin, escape included, has frequency >= 1),
 * cdf[length-1] == 1 << precision.
 * REQUIRES: cdf points to at least `length` entries (or length == 0).
 * Returns RC_OK, RC_ERR_ARG (NULL or bad precision) or RC_ERR_TABLE. */
rc_status rc_check_cdf(const int32_t *cdf, size_t length, uint32_t precision);

/* Checks every field of `tables` and every row with rc_check_cdf; also that
 * offset[c] + K_c - 1 fits in int32. O(C * L). rc_encode and rc_decode call
 * it themselves. Returns RC_OK, RC_ERR_ARG or RC_ERR_TABLE. */
rc_status rc_check_tables(const rc_tables *tables);

/* Writes the 8-byte model id of `tables` (see "Model id" above) to id[].
 * Returns RC_OK, RC_ERR_ARG or RC_ERR_TABLE (rc_check_tables). */
rc_status rc_model_id(const rc_tables *tables, uint8_t id[RC_MODEL_ID_SIZE]);

/* Capacity that always suffices for rc_encode of num_symbols symbols
 * (each symbol costs at most 16 + 6 + 33 bits plus rounding, i.e. < 8
 * bytes). Returns 0 when that bound does not fit in size_t. */
size_t rc_encode_bound(size_t num_symbols);

/* Scratch: optional caller-owned memory that makes rc_encode / rc_decode
 * faster (reciprocals instead of divisions; a bucket lookup instead of a
 * binary search). Results are identical with or without it. Building it is
 * O(C * L) (encode) or O(C * 2^min(precision, RC_LUT_BITS)) (decode) per
 * call, so it pays off when num_symbols is large against that.
 * Return the bytes needed, or 0 when the tables are invalid or the size
 * does not fit in size_t. Encode scratch must be 8-byte aligned, decode
 * scratch 2-byte aligned. */
#define RC_LUT_BITS 8u
size_t rc_encode_scratch_size(const rc_tables *tables);
size_t rc_decode_scratch_size(const rc_tables *tables);

/* Encodes symbols[0..num_symbols) into out[0..*out_size). check_seed is
 * folded into the stream's check (see "Payload"); decode with the same.
 * REQUIRES: symbols != NULL unless num_symbols == 0; out != NULL;
 *           out_size != NULL. Any int32 value is allowed.
 * The whole of out[0..capacity) may be used as working space (the stream
 * is built backwards from out + capacity and then moved to the front);
 * nothing outside it is written. rc_encode_bound(num_symbols) bytes always
 * suffice.
 * Returns RC_OK, RC_ERR_ARG, RC_ERR_TABLE or RC_ERR_OVERFLOW (capacity too
 * small; *out_size is then 0 and out's contents are unspecified).
 * scratch: NULL (scratch_size ignored) or rc_encode_scratch_size(tables)
 * bytes, 8-byte aligned; anything else is RC_ERR_ARG. */
rc_status rc_encode(const rc_tables *tables, const int32_t *symbols,
                    size_t num_symbols, uint32_t check_seed, uint8_t *out,
                    size_t capacity, size_t *out_size, void *scratch,
                    size_t scratch_size);

/* Decodes exactly num_symbols symbols from in[0..size) into symbols[].
 * REQUIRES: in != NULL unless size == 0; symbols != NULL unless
 *           num_symbols == 0.
 * Reads nothing outside in[0..size); writes nothing outside
 * symbols[0..num_symbols). Runs in O(num_symbols * log L) whatever the
 * input. On failure symbols[] holds unspecified (but written) values.
 * Returns RC_OK, RC_ERR_ARG, RC_ERR_TABLE, RC_ERR_TRUNCATED (input too
 * short), RC_ERR_CORRUPT (impossible state, escape or final state) or
 * RC_ERR_TRAILING (bytes left over). RC_ERR_CORRUPT also covers a wrong
 * check_seed or num_symbols. scratch: NULL or rc_decode_scratch_size(
 * tables) bytes, 2-byte aligned; anything else is RC_ERR_ARG. */
rc_status rc_decode(const rc_tables *tables, const uint8_t *in, size_t size,
                    uint32_t check_seed, int32_t *symbols, size_t num_symbols,
                    void *scratch, size_t scratch_size);

/* Writes the container header for `header` (model_id, rank, dims) into
 * out[0..capacity); sets header->header_size.
 * REQUIRES: 1 <= rank <= RC_MAX_RANK, dims < 2^63, product of dims < 2^62.
 * Returns RC_OK, RC_ERR_ARG or RC_ERR_OVERFLOW. */
rc_status rc_header_write(rc_header *header, uint8_t *out, size_t capacity);

/* Parses a container header from in[0..size) into *header (model_id, rank,
 * dims, num_symbols, header_size). Reads nothing past in + size.
 * Returns RC_OK, RC_ERR_ARG, RC_ERR_TRUNCATED, RC_ERR_MAGIC,
 * RC_ERR_VERSION or RC_ERR_CORRUPT (bad rank, non-minimal or too large
 * varint, product of dims >= 2^62). */
rc_status rc_header_parse(const uint8_t *in, size_t size, rc_header *header);

/* Writes a whole container: the header (model id = rc_model_id(tables),
 * rank, dims) then the payload of symbols[0..num_symbols), seeded with the
 * header's check_seed. rc_encode_bound(num_symbols) + RC_MAX_HEADER_SIZE
 * bytes always suffice. Tables are checked once.
 * REQUIRES: 1 <= rank <= RC_MAX_RANK, dims[rank-1] == C, product of dims ==
 *           num_symbols (< 2^62); scratch as for rc_encode.
 * Returns RC_OK, RC_ERR_ARG, RC_ERR_TABLE or RC_ERR_OVERFLOW. */
rc_status rc_container_encode(const rc_tables *tables, const uint64_t *dims,
                              uint32_t rank, const int32_t *symbols,
                              size_t num_symbols, uint8_t *out,
                              size_t capacity, size_t *out_size,
                              void *scratch, size_t scratch_size);

/* Decodes a whole container in[0..size) made with `tables`: parses the
 * header, checks the model id (RC_ERR_MODEL) and that the last dim is C
 * (RC_ERR_CORRUPT), then decodes the payload into symbols[0..num_symbols).
 * num_symbols must equal the header's product of dims (parse it first with
 * rc_header_parse to size the buffer), else RC_ERR_ARG.
 * Returns RC_OK or any error of rc_header_parse / rc_decode, or
 * RC_ERR_MODEL. */
rc_status rc_container_decode(const rc_tables *tables, const uint8_t *in,
                              size_t size, int32_t *symbols,
                              size_t num_symbols, void *scratch,
                              size_t scratch_size);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* HECSB_JAX_NATIVE_RC_H_ */
