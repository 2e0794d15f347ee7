/// NodeStore holds the per-object metadata of a policy in flat arrays (struct of arrays, index = node) and
/// threads up to ``maxLists`` doubly linked lists through them. Lists run from head (newest) to tail (oldest).
///
/// Nodes carry an ID, a size, the list they are on, and two free fields (`a`, `b`) each policy uses for its
/// own state (a frequency, a bit, a next-access time). Freed nodes are reused. Like ``IDMap`` it is owned by
/// one policy and not thread-safe.
public final class NodeStore {
    /// How many lists one store can hold.
    public static let maxLists = 8
    /// The "no node" index.
    public static let none: Int32 = -1

    public private(set) var id: UnsafeMutablePointer<UInt64>
    public private(set) var size: UnsafeMutablePointer<Int64>
    public private(set) var prev: UnsafeMutablePointer<Int32>
    public private(set) var next: UnsafeMutablePointer<Int32>
    public private(set) var list: UnsafeMutablePointer<Int8>
    /// A policy's first field (frequency, visited bit, LIR flag...).
    public private(set) var a: UnsafeMutablePointer<Int32>
    /// A policy's second field (next access time, frequency...).
    public private(set) var b: UnsafeMutablePointer<Int64>
    private var capacity: Int
    /// Nodes ever handed out (free or not): valid indices are `0..<allocated`.
    public private(set) var allocated: Int = 0
    private var freeHead: Int32 = none

    /// The newest node of each list.
    public let head: UnsafeMutablePointer<Int32> = .allocate(capacity: maxLists)
    /// The oldest node of each list.
    public let tail: UnsafeMutablePointer<Int32> = .allocate(capacity: maxLists)
    /// Nodes on each list.
    public let count: UnsafeMutablePointer<Int> = .allocate(capacity: maxLists)
    /// Sum of the sizes of the nodes on each list.
    public let bytes: UnsafeMutablePointer<Int64> = .allocate(capacity: maxLists)

    /// Creates a store with room for `capacity` nodes (it grows as needed).
    public init(capacity: Int = 1024) {
        self.capacity = max(16, capacity)
        id = .allocate(capacity: self.capacity)
        size = .allocate(capacity: self.capacity)
        prev = .allocate(capacity: self.capacity)
        next = .allocate(capacity: self.capacity)
        list = .allocate(capacity: self.capacity)
        a = .allocate(capacity: self.capacity)
        b = .allocate(capacity: self.capacity)
        head.initialize(repeating: NodeStore.none, count: NodeStore.maxLists)
        tail.initialize(repeating: NodeStore.none, count: NodeStore.maxLists)
        count.initialize(repeating: 0, count: NodeStore.maxLists)
        bytes.initialize(repeating: 0, count: NodeStore.maxLists)
    }

    deinit {
        id.deallocate()
        size.deallocate()
        prev.deallocate()
        next.deallocate()
        list.deallocate()
        a.deallocate()
        b.deallocate()
        head.deallocate()
        tail.deallocate()
        count.deallocate()
        bytes.deallocate()
    }

    /// A new node, on no list, with both policy fields zero.
    @inline(__always)
    public func allocate(id objectID: UInt64, size objectSize: Int64) -> Int32 {
        let n: Int32
        if freeHead != NodeStore.none {
            n = freeHead
            freeHead = next[Int(n)]
        } else {
            if allocated == capacity { grow() }
            n = Int32(allocated)
            allocated += 1
        }
        let i = Int(n)
        id[i] = objectID
        size[i] = objectSize
        prev[i] = NodeStore.none
        next[i] = NodeStore.none
        list[i] = -1
        a[i] = 0
        b[i] = 0
        return n
    }

    /// Returns a node (already off its list) to the free list.
    @inline(__always)
    public func free(_ n: Int32) {
        next[Int(n)] = freeHead
        list[Int(n)] = -1
        freeHead = n
    }

    private func grow() {
        let newCapacity = capacity * 2
        func regrow<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<T> {
            let q = UnsafeMutablePointer<T>.allocate(capacity: newCapacity)
            q.moveInitialize(from: p, count: capacity)
            p.deallocate()
            return q
        }
        id = regrow(id)
        size = regrow(size)
        prev = regrow(prev)
        next = regrow(next)
        list = regrow(list)
        a = regrow(a)
        b = regrow(b)
        capacity = newCapacity
    }

    /// Puts node `n` (on no list) at the head of list `l`.
    @inline(__always)
    public func pushHead(_ n: Int32, _ l: Int) {
        let i = Int(n)
        list[i] = Int8(l)
        prev[i] = NodeStore.none
        next[i] = head[l]
        if head[l] != NodeStore.none { prev[Int(head[l])] = n } else { tail[l] = n }
        head[l] = n
        count[l] += 1
        bytes[l] += size[i]
    }

    /// Puts node `n` (on no list) at the tail of list `l`.
    @inline(__always)
    public func pushTail(_ n: Int32, _ l: Int) {
        let i = Int(n)
        list[i] = Int8(l)
        next[i] = NodeStore.none
        prev[i] = tail[l]
        if tail[l] != NodeStore.none { next[Int(tail[l])] = n } else { head[l] = n }
        tail[l] = n
        count[l] += 1
        bytes[l] += size[i]
    }

    /// Takes node `n` off its list.
    @inline(__always)
    public func unlink(_ n: Int32) {
        let i = Int(n)
        let l = Int(list[i])
        let p = prev[i]
        let q = next[i]
        if p != NodeStore.none { next[Int(p)] = q } else { head[l] = q }
        if q != NodeStore.none { prev[Int(q)] = p } else { tail[l] = p }
        prev[i] = NodeStore.none
        next[i] = NodeStore.none
        list[i] = -1
        count[l] -= 1
        bytes[l] -= size[i]
    }

    /// Moves node `n` to the head of list `l` (its own list or another).
    @inline(__always)
    public func moveToHead(_ n: Int32, _ l: Int) {
        if head[l] == n { return }
        unlink(n)
        pushHead(n, l)
    }
}
