import Synchronization
@testable import PortcullisCore

/// An `AtomicWord` in process memory: the shared-memory word's stand-in for the pure state
/// machines (a class, so threads share it).
final class TestWord: AtomicWord, @unchecked Sendable {
    private let value = Atomic<UInt64>(0)
    init(_ initial: UInt64 = 0) { value.store(initial, ordering: .sequentiallyConsistent) }
    func load() -> UInt64 { value.load(ordering: .sequentiallyConsistent) }
    func compareExchange(expected: UInt64, desired: UInt64) -> Bool {
        value.compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent).exchanged
    }
    @discardableResult func add(_ delta: UInt64) -> UInt64 { value.wrappingAdd(delta, ordering: .sequentiallyConsistent).newValue }
}
