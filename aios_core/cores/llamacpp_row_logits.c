/* llama.cpp's output layer one row at a time: llamacpp_row_logits.py compiles it on first use.
 *
 * From two logits rows on, ggml hands a Q8_0 matrix product to llamafile's tinyBLAS, whose tiles
 * suit row counts that are multiples of four; for other counts it is several times slower than
 * ggml's one-row path (python -m aios.bench.studies.rows). This function computes every row's
 * logits with ggml's own one-row kernel: the activations quantized by ggml's from_float, each
 * token's dot product by ggml's vec_dot (both taken from ggml_get_type_traits_cpu by Python), so
 * a logit is the one llama.cpp computes, bit for bit. Each token's weights are read once for all
 * rows. The vocabulary is split over n_threads threads (the calling thread takes the last part).
 *
 * No ggml header: the two function types are ggml-cpu.h's, written out.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef void (*aios_vec_dot_t)(int n, float * s, size_t bs, const void * x, size_t bx, const void * y, size_t by, int nrc);
typedef void (*aios_from_float_t)(const float * x, void * y, int64_t k);

#define AIOS_MAX_THREADS 64

typedef struct {
    aios_vec_dot_t vec_dot;
    const uint8_t * weights;   /* n_vocab rows of row_bytes */
    const uint8_t * acts;      /* n_rows quantized rows of row_bytes */
    float * out;               /* n_rows x n_vocab */
    int64_t row_bytes, n_embd, n_vocab, n_rows, lo, hi;
} aios_row_job;

static void * aios_row_run(void * arg) {
    const aios_row_job * job = (const aios_row_job *) arg;
    for (int64_t v = job->lo; v < job->hi; v++) {
        const uint8_t * w = job->weights + v * job->row_bytes;
        for (int64_t r = 0; r < job->n_rows; r++) {
            job->vec_dot((int) job->n_embd, job->out + r * job->n_vocab + v, 0, w, 0, job->acts + r * job->row_bytes, 0, 1);
        }
    }
    return NULL;
}

/* Returns the threads that ran (a thread that could not be started leaves its part to the caller's). */
int aios_row_logits(aios_vec_dot_t vec_dot, aios_from_float_t from_float, const uint8_t * weights, int64_t n_vocab,
                    int64_t row_bytes, int64_t n_embd, const float * hidden, int64_t n_rows, uint8_t * acts, float * out,
                    int n_threads) {
    for (int64_t r = 0; r < n_rows; r++) {
        from_float(hidden + r * n_embd, acts + r * row_bytes, n_embd);
    }
    if (n_threads < 1) {
        n_threads = 1;
    }
    if (n_threads > AIOS_MAX_THREADS) {
        n_threads = AIOS_MAX_THREADS;
    }
    aios_row_job jobs[AIOS_MAX_THREADS];
    pthread_t threads[AIOS_MAX_THREADS];
    int started[AIOS_MAX_THREADS];
    int ran = 1;
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = (aios_row_job) {vec_dot, weights, acts, out, row_bytes, n_embd, n_vocab, n_rows,
                                  n_vocab * t / n_threads, n_vocab * (t + 1) / n_threads};
        started[t] = 0;
    }
    for (int t = 0; t + 1 < n_threads; t++) {
        started[t] = pthread_create(&threads[t], NULL, aios_row_run, &jobs[t]) == 0;
        ran += started[t];
    }
    aios_row_run(&jobs[n_threads - 1]);
    for (int t = 0; t + 1 < n_threads; t++) {
        if (started[t]) {
            pthread_join(threads[t], NULL);
        } else {
            aios_row_run(&jobs[t]);
        }
    }
    return ran;
}
