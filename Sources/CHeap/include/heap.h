#ifndef TANDEM_HEAP_H
#define TANDEM_HEAP_H
#include <stddef.h>

/// The C heap's bytes in use (small blocks and mmapped ones) and free bytes it holds in its arenas,
/// summed over every arena.
void tandem_heap_stats(size_t *in_use, size_t *free_bytes);

/// Gives the heap's free pages back to the system; 1 if memory was released.
int tandem_heap_trim(void);

#endif
