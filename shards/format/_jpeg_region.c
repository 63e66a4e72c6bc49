/* Decode a rectangle of a JPEG with libjpeg(-turbo), and nothing more than the rectangle needs.
 *
 * The training input crops every frame before resizing it: rows below the crop are never decoded
 * (the decode stops there), rows above it are only entropy-decoded (jpeg_skip_scanlines), and
 * columns outside it are not inverse-transformed, upsampled or colour-converted
 * (jpeg_crop_scanline). The pixels are exactly those of a full decode with the same settings
 * (accurate integer DCT, fancy upsampling, RGB out), which tests/shards/test_jpeg_decode.py checks.
 *
 * Strict: a libjpeg warning (corrupt or truncated data) is an error, as an error is; the GIL is
 * released while decoding. Built as the optional extension shards.format._jpeg_region (setup.py); without
 * it shards.input.sampling decodes whole frames with simplejpeg.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} Errors;

static void fail(j_common_ptr cinfo) {
    Errors *errors = (Errors *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, errors->message);
    longjmp(errors->jump, 1);
}

static void message(j_common_ptr cinfo, int level) {
    if (level < 0) /* a warning: the data is corrupt or truncated */
        fail(cinfo);
}

/* Route libjpeg's errors and warnings to fail() and make the decompressor (destroy it afterwards). */
static void create(struct jpeg_decompress_struct *cinfo, Errors *errors) {
    cinfo->err = jpeg_std_error(&errors->pub);
    errors->pub.error_exit = fail;
    errors->pub.emit_message = message;
    errors->message[0] = '\0';
    jpeg_create_decompress(cinfo);
}

enum { OK, LIBJPEG_ERROR, UNSUPPORTED, OUTSIDE, SMALL_BUFFER };
enum { MARGIN = 2 };

/* decode(data, top, left, height, width, out) -> (height, width, rows, row_width, shift)
 *
 * Writes rows [top, top + height) of the frame into `out` as RGB, each row `row_width` pixels
 * starting at column left - shift (libjpeg widens the columns to whole blocks); the requested
 * rectangle is out[:, shift:shift + width]. height or width <= 0 means the whole frame. The
 * first two numbers are the frame's size. */
static PyObject *decode(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer data, out;
    int top, left, height, width;
    if (!PyArg_ParseTuple(args, "y*iiiiw*", &data, &top, &left, &height, &width, &out))
        return NULL;
    struct jpeg_decompress_struct cinfo;
    Errors errors;
    volatile int status = OK;
    volatile JDIMENSION x = 0, w = 0, frame_h = 0, frame_w = 0;
    volatile int rows = 0;
    Py_BEGIN_ALLOW_THREADS
    create(&cinfo, &errors);
    if (setjmp(errors.jump)) {
        status = LIBJPEG_ERROR;
    } else {
        jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
        jpeg_read_header(&cinfo, TRUE);
        if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
            status = UNSUPPORTED;
        } else {
            cinfo.out_color_space = JCS_RGB;
            cinfo.dct_method = JDCT_ISLOW;
            cinfo.do_fancy_upsampling = TRUE;
            jpeg_start_decompress(&cinfo);
            frame_h = cinfo.output_height;
            frame_w = cinfo.output_width;
            if (height <= 0 || width <= 0) {
                top = 0, left = 0, height = (int)frame_h, width = (int)frame_w;
            }
            if (top < 0 || left < 0 || (JDIMENSION)(top + height) > frame_h ||
                (JDIMENSION)(left + width) > frame_w) {
                status = OUTSIDE;
            } else {
                /* Fancy upsampling reads one chroma sample beyond each side, which a cropped decode
                 * replaces by its edge: decode MARGIN more pixels each side (libjpeg widens the
                 * columns to whole blocks anyway), so the rectangle's own pixels are exact. */
                JDIMENSION cx = (JDIMENSION)(left > MARGIN ? left - MARGIN : 0);
                JDIMENSION cw = (JDIMENSION)(left + width + MARGIN) < frame_w ? left + width + MARGIN - cx
                                                                              : frame_w - cx;
                if (cw < frame_w)
                    jpeg_crop_scanline(&cinfo, &cx, &cw);
                x = cx, w = cw;
                if ((Py_ssize_t)height * w * 3 > out.len) {
                    status = SMALL_BUFFER;
                } else {
                    if (top > 0)
                        jpeg_skip_scanlines(&cinfo, (JDIMENSION)top);
                    unsigned char *base = (unsigned char *)out.buf;
                    while (rows < height) {
                        JSAMPROW row = base + (size_t)rows * w * 3;
                        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1)
                            break;
                        rows++;
                    }
                }
            }
        }
    }
    jpeg_destroy_decompress(&cinfo);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyBuffer_Release(&data);
    switch (status) {
    case LIBJPEG_ERROR:
        PyErr_Format(PyExc_ValueError, "%s", errors.message);
        return NULL;
    case UNSUPPORTED:
        PyErr_SetString(PyExc_NotImplementedError, "CMYK/YCCK JPEG: decode it another way");
        return NULL;
    case OUTSIDE:
        PyErr_Format(PyExc_ValueError, "region %dx%d at (%d, %d) lies outside the %ux%u frame", height, width,
                     top, left, frame_h, frame_w);
        return NULL;
    case SMALL_BUFFER:
        PyErr_Format(PyExc_ValueError, "output buffer of %zd bytes is too small for %d rows of %u pixels",
                     out.len, height, w);
        return NULL;
    }
    if (rows < height) {
        PyErr_SetString(PyExc_ValueError, "the JPEG ended before the region did");
        return NULL;
    }
    return Py_BuildValue("IIiIi", frame_h, frame_w, rows, w, left - (int)x);
}

/* size(data) -> (height, width), from the header alone. */
static PyObject *size(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data))
        return NULL;
    struct jpeg_decompress_struct cinfo;
    Errors errors;
    volatile int status = OK;
    create(&cinfo, &errors);
    if (setjmp(errors.jump)) {
        status = LIBJPEG_ERROR;
    } else {
        jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
        jpeg_read_header(&cinfo, TRUE);
    }
    JDIMENSION height = cinfo.image_height, width = cinfo.image_width;
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    if (status != OK) {
        PyErr_Format(PyExc_ValueError, "%s", errors.message);
        return NULL;
    }
    return Py_BuildValue("II", height, width);
}

static PyMethodDef methods[] = {
    {"size", size, METH_VARARGS, "size(data) -> (height, width)"},
    {"decode", decode, METH_VARARGS,
     "decode(data, top, left, height, width, out) -> (frame_height, frame_width, rows, row_width, shift)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_region",
                                    "Decode a rectangle of a JPEG with libjpeg(-turbo).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jpeg_region(void) { return PyModule_Create(&module); }
