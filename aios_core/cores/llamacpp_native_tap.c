/* The greedy head's eval callback in C: llamacpp_native_tap.py compiles it on first use.
 *
 * ggml calls a context's eval callback for every node of every graph (about 700 a step for
 * Gemma 3 270M). The Python callback (HiddenTap in llamacpp_head.py) takes the GIL for each
 * call, and while the kernel's loop runs Python beside the engine thread every call waits for
 * it: up to a quarter of a decoding step. This function does the same work with no Python at
 * all: it wants only the node named result_norm, copies its rows into a buffer Python reads
 * after llama_decode returns, and (when asked to) stops the graph there.
 *
 * The offsets into struct ggml_tensor are passed in by Python (the same ones HiddenTap reads),
 * so this file needs no ggml header; the load-time check of the head compares its picks with
 * llama.cpp's, so a layout that does not fit is found before any request depends on it.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    /* set by Python between decodes */
    int32_t active;        /* take the result_norm rows of the coming decode */
    int32_t stop;          /* and stop each micro-batch's graph after them */
    int64_t n_embd;
    int64_t capacity;      /* rows the buffer holds */
    float * buffer;
    int64_t ne_offset, nb_offset, data_offset, name_offset;
    /* written by the callback */
    int64_t rows;          /* rows copied since Python last took them */
    int32_t refused;       /* a result_norm this tap does not read (layout, or no room): take nothing */
    int64_t calls;         /* every call, for tests */
} aios_native_tap;

static const char HIDDEN_NODE[] = "result_norm";

bool aios_native_tap_on_node(const char * tensor, bool ask, void * user_data) {
    aios_native_tap * tap = (aios_native_tap *) user_data;
    tap->calls++;
    if (!tap->active || tensor == NULL) {
        return false;
    }
    if (memcmp(tensor + tap->name_offset, HIDDEN_NODE, sizeof HIDDEN_NODE) != 0) {
        return false;
    }
    if (ask) {
        return true;
    }
    int64_t ne[2];
    size_t nb[2];
    const float * data;
    memcpy(ne, tensor + tap->ne_offset, sizeof ne);
    memcpy(nb, tensor + tap->nb_offset, sizeof nb);
    memcpy(&data, tensor + tap->data_offset, sizeof data);
    if (ne[0] != tap->n_embd || nb[0] != sizeof(float) || nb[1] != sizeof(float) * (size_t) ne[0] || data == NULL ||
        ne[1] < 0 || tap->rows + ne[1] > tap->capacity) {
        /* let llama.cpp finish the graph: the caller sees too few rows and uses llama.cpp's logits */
        tap->refused = 1;
        return true;
    }
    memcpy(tap->buffer + tap->rows * tap->n_embd, data, sizeof(float) * (size_t) (ne[0] * ne[1]));
    tap->rows += ne[1];
    return !tap->stop;
}
