/* openmp.c: the OpenMP runtime torch and shoal's kernels share (module shoal.trainer._openmp).
 *
 * After a parallel region GNU OpenMP's worker threads spin-wait for the next one before they
 * sleep: about 8 ms of a core after torch's products on two threads on a 2-core AMD EPYC
 * (benchmarks/learner_floor.py). When the update's last gradient steps run on two torch threads
 * (train.overlap_tail_threads) that spin holds the core the rollout thread needs as soon as the
 * next epoch starts; pause() lets the caller's workers go instead (OpenMP 5.0's
 * omp_pause_resource_all, soft: the next parallel region starts them again).
 *
 * This extension links the OpenMP runtime under the soname torch's CPU build loads (kernels.h), so
 * in a training process it acts on torch's runtime. Built without OpenMP (SHOAL_NO_OPENMP=1)
 * pause() does nothing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef _OPENMP
#include <omp.h>
#endif

PyDoc_STRVAR(pause_doc,
"pause() -> bool\n--\n\n"
"Releases the calling thread's idle OpenMP workers (they stop spin-waiting; the next parallel\n"
"region starts them again). False where nothing was paused: inside a parallel region, or\n"
"a build without OpenMP.");

static PyObject* openmp_pause(PyObject* self, PyObject* args) {
    (void)self;
    (void)args;
    int rc = -1;
#ifdef _OPENMP      /* (omp_pause_resource_all: in GCC's libgomp since 9, LLVM's libomp since 8) */
    Py_BEGIN_ALLOW_THREADS
    rc = omp_pause_resource_all(omp_pause_soft);
    Py_END_ALLOW_THREADS
#endif
    return PyBool_FromLong(rc == 0);
}

static PyMethodDef openmp_methods[] = {
    {"pause", openmp_pause, METH_NOARGS, pause_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef openmp_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_openmp",
    .m_doc = "The OpenMP runtime torch and shoal's kernels share: releasing its idle workers.",
    .m_size = -1,
    .m_methods = openmp_methods,
};

PyMODINIT_FUNC PyInit__openmp(void) { return PyModule_Create(&openmp_module); }
