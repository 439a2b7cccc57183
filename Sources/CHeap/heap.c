#include "heap.h"
#include <malloc.h>

void tandem_heap_stats(size_t *in_use, size_t *free_bytes) {
    struct mallinfo2 info = mallinfo2();
    *in_use = info.uordblks + info.hblkhd;
    *free_bytes = info.fordblks;
}

int tandem_heap_trim(void) { return malloc_trim(0); }
