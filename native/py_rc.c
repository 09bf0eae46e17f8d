/* py_rc.c -- CPython binding of rc.h: hecsb_jax.coding._rc.
 *
 * Thin on purpose: int32 buffers in (buffer protocol; no numpy C API),
 * bytes out, rc_status mapped to exceptions (DecodeError for bad input,
 * ValueError/TypeError for bad arguments). Shape checks, model ids and the
 * public API live in hecsb_jax/coding/codec.py. The GIL is released while
 * coding. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "rc.h"

static PyObject *g_decode_error; /* set once in module init */

/* ---------------------------------------------------------------------- */
/* Buffers. */

static int host_is_little_endian(void) {
  const uint16_t probe = 1;
  return *(const uint8_t *)&probe == 1;
}

/* True if a struct-module format string is a native-order 4-byte signed
 * integer ("i", "@i", "=i", "<i" on little-endian hosts, ...). */
static int is_int32_format(const char *format, Py_ssize_t itemsize) {
  const char *f = format == NULL ? "B" : format;
  if (itemsize != 4) return 0;
  if (*f == '@' || *f == '=') {
    ++f;
  } else if (*f == '<') {
    if (!host_is_little_endian()) return 0;
    ++f;
  } else if (*f == '>' || *f == '!') {
    if (host_is_little_endian()) return 0;
    ++f;
  }
  return (f[0] == 'i' || f[0] == 'l') && f[1] == '\0';
}

/* Gets a C-contiguous int32 buffer with `ndim` dimensions (-1: any).
 * Raises TypeError (not a buffer / wrong dtype) or ValueError (layout). */
static int get_int32(PyObject *obj, Py_buffer *view, int writable, int ndim,
                     const char *name) {
  const int flags = writable ? PyBUF_RECORDS : PyBUF_RECORDS_RO;
  if (PyObject_GetBuffer(obj, view, flags) != 0) {
    if (PyErr_ExceptionMatches(PyExc_BufferError)) {
      PyErr_Clear();
      PyErr_Format(PyExc_ValueError, "%s: expected a %s int32 buffer", name,
                   writable ? "writable" : "readable");
    }
    return -1;
  }
  if (!is_int32_format(view->format, view->itemsize)) {
    PyErr_Format(PyExc_TypeError,
                 "%s: expected int32 data, got format '%s' with itemsize %zd",
                 name, view->format ? view->format : "B", view->itemsize);
    PyBuffer_Release(view);
    return -1;
  }
  if (!PyBuffer_IsContiguous(view, 'C')) {
    PyErr_Format(PyExc_ValueError,
                 "%s: expected a C-contiguous array (use "
                 "numpy.ascontiguousarray)",
                 name);
    PyBuffer_Release(view);
    return -1;
  }
  if (ndim >= 0 && view->ndim != ndim) {
    PyErr_Format(PyExc_ValueError, "%s: expected %d dimension(s), got %d",
                 name, ndim, view->ndim);
    PyBuffer_Release(view);
    return -1;
  }
  return 0;
}

/* The three table buffers plus rc_tables pointing into them. */
typedef struct py_tables {
  Py_buffer cdf, cdf_length, offset;
  int held; /* how many of the views above are held */
  rc_tables t;
} py_tables;

static void release_tables(py_tables *pt) {
  if (pt->held > 2) PyBuffer_Release(&pt->offset);
  if (pt->held > 1) PyBuffer_Release(&pt->cdf_length);
  if (pt->held > 0) PyBuffer_Release(&pt->cdf);
  pt->held = 0;
}

static int get_tables(PyObject *cdf, PyObject *cdf_length, PyObject *offset,
                      int precision, py_tables *pt) {
  Py_ssize_t channels, stride;
  rc_status s;
  pt->held = 0;
  if (get_int32(cdf, &pt->cdf, 0, 2, "cdf") != 0) return -1;
  pt->held = 1;
  if (get_int32(cdf_length, &pt->cdf_length, 0, 1, "cdf_length") != 0) {
    release_tables(pt);
    return -1;
  }
  pt->held = 2;
  if (get_int32(offset, &pt->offset, 0, 1, "offset") != 0) {
    release_tables(pt);
    return -1;
  }
  pt->held = 3;
  channels = pt->cdf.shape[0];
  stride = pt->cdf.shape[1];
  if (channels < 1 || stride < 2 || channels > (Py_ssize_t)UINT32_MAX ||
      stride > (Py_ssize_t)UINT32_MAX ||
      pt->cdf_length.shape[0] != channels ||
      pt->offset.shape[0] != channels) {
    PyErr_Format(PyExc_ValueError,
                 "tables: expected cdf [C, L] with C >= 1, L >= 2 and "
                 "cdf_length, offset [C]; got cdf [%zd, %zd], cdf_length "
                 "[%zd], offset [%zd]",
                 channels, stride, pt->cdf_length.shape[0],
                 pt->offset.shape[0]);
    release_tables(pt);
    return -1;
  }
  pt->t.cdf = (const int32_t *)pt->cdf.buf;
  pt->t.cdf_length = (const int32_t *)pt->cdf_length.buf;
  pt->t.offset = (const int32_t *)pt->offset.buf;
  pt->t.num_channels = (uint32_t)channels;
  pt->t.cdf_stride = (uint32_t)stride;
  pt->t.precision = precision < 0 ? 0u : (uint32_t)precision;
  s = rc_check_tables(&pt->t);
  if (s != RC_OK) {
    PyErr_Format(PyExc_ValueError,
                 "tables: %s (every row needs cdf[0] = 0, strictly "
                 "increasing entries up to cdf[cdf_length - 1] = "
                 "2^precision, 2 <= cdf_length <= L, 1 <= precision <= "
                 "%u, offset + cdf_length - 3 within int32); got precision "
                 "%d",
                 rc_status_string(s), RC_MAX_PRECISION, precision);
    release_tables(pt);
    return -1;
  }
  return 0;
}

/* Raises the exception for a non-OK status from parsing or decoding. */
static PyObject *raise_decode(rc_status s, const char *what) {
  if (s == RC_ERR_ARG || s == RC_ERR_TABLE) {
    PyErr_Format(PyExc_ValueError, "%s: %s", what, rc_status_string(s));
  } else {
    PyErr_Format(g_decode_error, "%s: %s", what, rc_status_string(s));
  }
  return NULL;
}

/* use_scratch: None = decide by size, True/False = force. */
static int want_scratch(PyObject *use_scratch, size_t num_symbols,
                        size_t build_cost) {
  if (use_scratch == NULL || use_scratch == Py_None) {
    return num_symbols >= build_cost;
  }
  return PyObject_IsTrue(use_scratch);
}

/* ---------------------------------------------------------------------- */

PyDoc_STRVAR(encode_doc,
"encode(shape, symbols, cdf, cdf_length, offset, precision,\n"
"       use_scratch=None) -> bytes\n\n"
"Writes a container (header with the tables' model id, then the payload;\n"
"native/rc.h) for int32 `symbols` (C-contiguous, product(shape) elements,\n"
"shape[-1] == C; channel = flat index % C). `use_scratch` forces (True) or\n"
"forbids (False) the reciprocal tables; None decides by size. The bytes do\n"
"not depend on it.");

static PyObject *py_encode(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"shape", "symbols", "cdf", "cdf_length",
                           "offset", "precision", "use_scratch", NULL};
  PyObject *shape, *symbols_obj, *cdf, *cdf_length, *offset;
  PyObject *use_scratch = Py_None;
  PyObject *shape_seq = NULL, *result = NULL;
  int precision;
  py_tables pt;
  Py_buffer sym;
  uint64_t dims[RC_MAX_RANK];
  Py_ssize_t r, rank;
  uint64_t count = 1;
  size_t num, bound, total, size = 0, scratch_size = 0;
  void *scratch = NULL;
  int scratch_on;
  rc_status s;
  (void)self;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOi|O", kwlist, &shape,
                                   &symbols_obj, &cdf, &cdf_length, &offset,
                                   &precision, &use_scratch)) {
    return NULL;
  }
  shape_seq = PySequence_Fast(shape, "shape: expected a sequence of ints");
  if (shape_seq == NULL) return NULL;
  rank = PySequence_Fast_GET_SIZE(shape_seq);
  if (rank < 1 || rank > (Py_ssize_t)RC_MAX_RANK) {
    Py_DECREF(shape_seq);
    return PyErr_Format(PyExc_ValueError,
                        "shape: rank must be 1..%u, got %zd", RC_MAX_RANK,
                        rank);
  }
  for (r = 0; r < rank; ++r) {
    PyObject *item = PySequence_Fast_GET_ITEM(shape_seq, r);
    unsigned long long d = PyLong_AsUnsignedLongLong(item);
    if (PyErr_Occurred()) {
      Py_DECREF(shape_seq);
      return NULL;
    }
    dims[r] = (uint64_t)d;
    count = (d != 0 && count > UINT64_MAX / d) ? UINT64_MAX : count * d;
  }
  Py_DECREF(shape_seq);
  if (get_tables(cdf, cdf_length, offset, precision, &pt) != 0) return NULL;
  if (get_int32(symbols_obj, &sym, 0, -1, "symbols") != 0) {
    release_tables(&pt);
    return NULL;
  }
  num = (size_t)(sym.len / 4);
  if (count != (uint64_t)num) {
    PyErr_Format(PyExc_ValueError,
                 "shape: its product must equal the %zu symbols", num);
    goto done;
  }
  if (dims[rank - 1] != pt.t.num_channels) {
    PyErr_Format(PyExc_ValueError,
                 "shape: the last dim must be the tables' %u channels",
                 pt.t.num_channels);
    goto done;
  }
  bound = rc_encode_bound(num);
  if (bound == 0 || bound > (size_t)PY_SSIZE_T_MAX - RC_MAX_HEADER_SIZE) {
    PyErr_SetString(PyExc_OverflowError, "symbols: too many to encode");
    goto done;
  }
  total = RC_MAX_HEADER_SIZE + bound;
  result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
  if (result == NULL) goto done;
  scratch_on = want_scratch(use_scratch, num,
                            4 * (size_t)pt.t.num_channels * pt.t.cdf_stride);
  if (scratch_on < 0) {
    Py_CLEAR(result);
    goto done;
  }
  if (scratch_on) {
    scratch_size = rc_encode_scratch_size(&pt.t);
    scratch = scratch_size ? PyMem_RawMalloc(scratch_size) : NULL;
    if (scratch == NULL) scratch_size = 0; /* fall back: same bytes */
  }
  Py_BEGIN_ALLOW_THREADS
  s = rc_container_encode(&pt.t, dims, (uint32_t)rank,
                          (const int32_t *)sym.buf, num,
                          (uint8_t *)PyBytes_AS_STRING(result), total, &size,
                          scratch, scratch_size);
  Py_END_ALLOW_THREADS
  PyMem_RawFree(scratch);
  if (s != RC_OK) {
    if (s == RC_ERR_ARG) {
      PyErr_Format(PyExc_ValueError,
                   "shape: %s (each dim < 2^63, product < 2^62)",
                   rc_status_string(s));
    } else {
      PyErr_Format(PyExc_RuntimeError, "rc_container_encode: %s",
                   rc_status_string(s));
    }
    Py_CLEAR(result);
    goto done;
  }
  if (_PyBytes_Resize(&result, (Py_ssize_t)size) != 0) result = NULL;
done:
  PyBuffer_Release(&sym);
  release_tables(&pt);
  return result;
}

PyDoc_STRVAR(parse_header_doc,
"parse_header(data) -> (model_id: bytes, shape: tuple, header_size: int)\n\n"
"Parses a container header; raises DecodeError if it is not one.");

static PyObject *py_parse_header(PyObject *self, PyObject *args) {
  Py_buffer data;
  rc_header h;
  rc_status s;
  PyObject *shape;
  uint32_t r;
  (void)self;
  if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
  s = rc_header_parse((const uint8_t *)data.buf, (size_t)data.len, &h);
  PyBuffer_Release(&data);
  if (s != RC_OK) return raise_decode(s, "container header");
  shape = PyTuple_New((Py_ssize_t)h.rank);
  if (shape == NULL) return NULL;
  for (r = 0; r < h.rank; ++r) {
    PyObject *d = PyLong_FromUnsignedLongLong(h.dims[r]);
    if (d == NULL) {
      Py_DECREF(shape);
      return NULL;
    }
    PyTuple_SET_ITEM(shape, r, d);
  }
  return Py_BuildValue("y#Nn", (const char *)h.model_id,
                       (Py_ssize_t)RC_MODEL_ID_SIZE, shape,
                       (Py_ssize_t)h.header_size);
}

PyDoc_STRVAR(decode_doc,
"decode(data, cdf, cdf_length, offset, precision, out, use_scratch=None)\n\n"
"Decodes the container `data` into `out`, a writable C-contiguous int32\n"
"buffer with exactly product(shape) elements (parse_header tells the\n"
"shape). Raises DecodeError for a damaged, truncated, over-long or\n"
"wrong-model container, ValueError for bad arguments.");

static PyObject *py_decode(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"data", "cdf", "cdf_length", "offset",
                           "precision", "out", "use_scratch", NULL};
  Py_buffer data, out;
  PyObject *cdf, *cdf_length, *offset, *out_obj;
  PyObject *use_scratch = Py_None;
  int precision, scratch_on;
  py_tables pt;
  rc_header h;
  rc_status s;
  size_t num, scratch_size = 0;
  void *scratch = NULL;
  PyObject *result = NULL;
  (void)self;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*OOOiO|O", kwlist, &data, &cdf,
                                   &cdf_length, &offset, &precision, &out_obj,
                                   &use_scratch)) {
    return NULL;
  }
  if (get_tables(cdf, cdf_length, offset, precision, &pt) != 0) {
    PyBuffer_Release(&data);
    return NULL;
  }
  if (get_int32(out_obj, &out, 1, -1, "out") != 0) {
    release_tables(&pt);
    PyBuffer_Release(&data);
    return NULL;
  }
  num = (size_t)(out.len / 4);
  s = rc_header_parse((const uint8_t *)data.buf, (size_t)data.len, &h);
  if (s != RC_OK) {
    raise_decode(s, "container header");
    goto done;
  }
  if (h.num_symbols != (uint64_t)num) {
    PyErr_Format(PyExc_ValueError,
                 "out: has %zu elements, the container holds %llu", num,
                 (unsigned long long)h.num_symbols);
    goto done;
  }
  scratch_on = want_scratch(use_scratch, num,
                            ((size_t)pt.t.num_channels << RC_LUT_BITS) / 8);
  if (scratch_on < 0) goto done;
  if (scratch_on) {
    scratch_size = rc_decode_scratch_size(&pt.t);
    scratch = scratch_size ? PyMem_RawMalloc(scratch_size) : NULL;
    if (scratch == NULL) scratch_size = 0;
  }
  Py_BEGIN_ALLOW_THREADS
  s = rc_container_decode(&pt.t, (const uint8_t *)data.buf, (size_t)data.len,
                          (int32_t *)out.buf, num, scratch, scratch_size);
  Py_END_ALLOW_THREADS
  PyMem_RawFree(scratch);
  if (s == RC_ERR_MODEL) {
    uint8_t want[RC_MODEL_ID_SIZE];
    char got_hex[2 * RC_MODEL_ID_SIZE + 1], want_hex[2 * RC_MODEL_ID_SIZE + 1];
    static const char digits[] = "0123456789abcdef";
    unsigned i;
    (void)rc_model_id(&pt.t, want); /* tables were checked above */
    for (i = 0; i < RC_MODEL_ID_SIZE; ++i) {
      got_hex[2 * i] = digits[h.model_id[i] >> 4];
      got_hex[2 * i + 1] = digits[h.model_id[i] & 15];
      want_hex[2 * i] = digits[want[i] >> 4];
      want_hex[2 * i + 1] = digits[want[i] & 15];
    }
    got_hex[2 * RC_MODEL_ID_SIZE] = want_hex[2 * RC_MODEL_ID_SIZE] = '\0';
    PyErr_Format(g_decode_error,
                 "payload was made for model %s, these tables are model %s",
                 got_hex, want_hex);
    goto done;
  }
  if (s != RC_OK) {
    raise_decode(s, s == RC_ERR_CORRUPT ? "container" : "payload");
    goto done;
  }
  result = Py_NewRef(Py_None);
done:
  PyBuffer_Release(&out);
  release_tables(&pt);
  PyBuffer_Release(&data);
  return result;
}

PyDoc_STRVAR(model_id_doc,
"model_id(cdf, cdf_length, offset, precision) -> bytes\n\n"
"The 8-byte model id of the tables (native/rc.h, \"Model id\").");

static PyObject *py_model_id(PyObject *self, PyObject *args) {
  PyObject *cdf, *cdf_length, *offset;
  int precision;
  py_tables pt;
  uint8_t id[RC_MODEL_ID_SIZE];
  rc_status s;
  (void)self;
  if (!PyArg_ParseTuple(args, "OOOi", &cdf, &cdf_length, &offset,
                        &precision)) {
    return NULL;
  }
  if (get_tables(cdf, cdf_length, offset, precision, &pt) != 0) return NULL;
  s = rc_model_id(&pt.t, id);
  release_tables(&pt);
  if (s != RC_OK) {
    return PyErr_Format(PyExc_ValueError, "tables: %s", rc_status_string(s));
  }
  return PyBytes_FromStringAndSize((const char *)id, RC_MODEL_ID_SIZE);
}

/* ---------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"model_id", py_model_id, METH_VARARGS, model_id_doc},
    {"encode", (PyCFunction)(void (*)(void))py_encode,
     METH_VARARGS | METH_KEYWORDS, encode_doc},
    {"decode", (PyCFunction)(void (*)(void))py_decode,
     METH_VARARGS | METH_KEYWORDS, decode_doc},
    {"parse_header", py_parse_header, METH_VARARGS, parse_header_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "hecsb_jax.coding._rc",
    "Native rANS coder (native/rc.h); use hecsb_jax.coding instead.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rc(void) {
  PyObject *m = PyModule_Create(&module);
  if (m == NULL) return NULL;
  g_decode_error = PyErr_NewExceptionWithDoc(
      "hecsb_jax.coding.DecodeError",
      "The bytes are not a container these tables can decode: damaged, "
      "truncated, over-long, or made for another model.",
      PyExc_ValueError, NULL);
  if (g_decode_error == NULL ||
      PyModule_AddObjectRef(m, "DecodeError", g_decode_error) != 0 ||
      PyModule_AddIntConstant(m, "FORMAT_VERSION", RC_FORMAT_VERSION) != 0 ||
      PyModule_AddIntConstant(m, "MODEL_ID_SIZE", RC_MODEL_ID_SIZE) != 0 ||
      PyModule_AddIntConstant(m, "MAX_RANK", RC_MAX_RANK) != 0 ||
      PyModule_AddIntConstant(m, "MAX_PRECISION", RC_MAX_PRECISION) != 0 ||
      PyModule_AddIntConstant(m, "EMPTY_PAYLOAD_SIZE",
                              RC_EMPTY_PAYLOAD_SIZE) != 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
