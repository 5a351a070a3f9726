/* binding.h: what an env's binding.c needs before it defines its hooks: Python.h and the
 * readers of parameters. The generic module itself is vec_binding.h, included last.
 */
#ifndef SHOAL_BINDING_H
#define SHOAL_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "shoal_env.h"

/* ---- params: Python has validated names, types and ranges; these only read ---- */

static int shoal_param_int(PyObject* params, const char* key, int* out) {
    PyObject* o = PyDict_GetItemString(params, key);
    if (o == NULL) {
        PyErr_Format(PyExc_KeyError, "missing env parameter '%s'", key);
        return -1;
    }
    long x = PyLong_AsLong(o);
    if (x == -1 && PyErr_Occurred()) return -1;
    *out = (int)x;
    return 0;
}

static int shoal_param_float(PyObject* params, const char* key, float* out) {
    PyObject* o = PyDict_GetItemString(params, key);
    if (o == NULL) {
        PyErr_Format(PyExc_KeyError, "missing env parameter '%s'", key);
        return -1;
    }
    double x = PyFloat_AsDouble(o);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    *out = (float)x;
    return 0;
}

#endif /* SHOAL_BINDING_H */
