#include "CPortcullis.h"

/* Lock-free on x86_64/aarch64, so safe on memory shared between processes: a process killed
   mid-operation leaves no lock behind. */
uint64_t pc_atomic_load_u64(const volatile uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void pc_atomic_store_u64(volatile uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
int pc_atomic_cas_u64(volatile uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
uint64_t pc_atomic_add_u64(volatile uint64_t *p, uint64_t delta) { return __atomic_add_fetch(p, delta, __ATOMIC_ACQ_REL); }
