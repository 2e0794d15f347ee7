import CNUMA
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// BlockArena hands out memory for cached blocks within a fixed byte budget, placed on the NUMA node of the
/// allocating thread when the machine has more than one node (libnuma's `numa_alloc_onnode`), else from the
/// ordinary heap. An allocation that would pass the budget fails: the budget is a hard limit, whatever the
/// eviction policy believes.
///
/// It is a budgeted allocator over whole blocks, not a slab: blocks are large (up to 1 MiB), so per-block
/// allocation costs little next to the copy.
public final class BlockArena: Sendable {
    /// The budget in bytes.
    public let budget: Int64
    /// Where memory comes from.
    public let placement: Placement
    private let used = Atomic<Int64>(0)

    /// Where the arena places memory.
    public enum Placement: Sendable, Equatable, CustomStringConvertible {
        /// One NUMA node (or libnuma unavailable): the heap.
        case singleNode
        /// `numa_alloc_onnode` on the node of the allocating CPU; the machine has this many nodes.
        case numaLocal(nodes: Int)

        public var description: String {
            switch self {
            case .singleNode: return "single NUMA node (heap)"
            case .numaLocal(let nodes): return "NUMA-local on \(nodes) nodes"
            }
        }
    }

    /// Creates an arena of `budget` bytes.
    public init(budget: Int64) {
        self.budget = budget
        if numa_available() >= 0 && numa_max_node() > 0 {
            placement = .numaLocal(nodes: Int(numa_max_node()) + 1)
        } else {
            placement = .singleNode
        }
    }

    /// Bytes allocated now.
    public var allocated: Int64 { used.load(ordering: .relaxed) }

    /// Charges `count` bytes allocated elsewhere (a block's `ByteBuffer`) to the budget.
    /// - Returns: false, charging nothing, when the budget does not allow it.
    public func reserve(_ count: Int) -> Bool {
        let size = Int64(count)
        var current = used.load(ordering: .relaxed)
        while true {
            guard current + size <= budget else { return false }
            let (exchanged, original) = used.compareExchange(
                expected: current, desired: current + size, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    /// Gives back a charge made by ``reserve(_:)``.
    public func release(_ count: Int) {
        used.subtract(Int64(count), ordering: .relaxed)
    }

    /// Allocates `count` bytes, or returns nil when the budget does not allow it.
    public func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer? {
        let size = Int64(count)
        guard reserve(count) else { return nil }
        let pointer: UnsafeMutableRawPointer?
        switch placement {
        case .singleNode:
            pointer = malloc(max(1, count))
        case .numaLocal:
            let cpu = eddy_current_cpu()
            let node = cpu >= 0 ? numa_node_of_cpu(cpu) : 0
            pointer = numa_alloc_onnode(max(1, count), max(0, node))
        }
        guard let pointer else {
            used.subtract(size, ordering: .relaxed)
            return nil
        }
        return UnsafeMutableRawBufferPointer(start: pointer, count: count)
    }

    /// Returns memory from ``allocate(_:)``.
    public func free(_ buffer: UnsafeMutableRawBufferPointer) {
        switch placement {
        case .singleNode: Glibc.free(buffer.baseAddress)
        case .numaLocal: numa_free(buffer.baseAddress, max(1, buffer.count))
        }
        used.subtract(Int64(buffer.count), ordering: .relaxed)
    }
}
