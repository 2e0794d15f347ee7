/// LFU: evict the least frequently used object; among equals, the one that reached that count first.
///
/// In-cache LFU as libCacheSim's `LFU` defines it (the O(1) bucket structure of Shah, Mitra and Matani, "An
/// O(1) algorithm for implementing the LFU cache eviction scheme", 2010): a new object starts at count 1, a hit
/// adds one and appends the object to its new count's bucket, eviction takes the oldest object of the lowest
/// non-empty bucket, and the count is forgotten on eviction. Pick it for stable popularity; it holds on to
/// formerly hot objects (no aging).
public final class LFU: PolicyBase, EvictionPolicy {
    /// Bucket lists by count: oldest at `bucketHead`, newest at `bucketTail`.
    private var bucketHead: [Int32] = [NodeStore.none, NodeStore.none]
    private var bucketTail: [Int32] = [NodeStore.none, NodeStore.none]
    private var bucketCount: [Int] = [0, 0]
    private var minFrequency = 1
    private var maxFrequency = 1

    public var name: String { "lfu" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id) else { return false }
        let old = Int(nodes.b[Int(n)])
        unlinkFromBucket(n, old)
        let new = old + 1
        nodes.b[Int(n)] = Int64(new)
        if new > maxFrequency { maxFrequency = new }
        appendToBucket(n, new)
        if minFrequency == old && bucketCount[old] == 0 { advanceMinimum() }
        return true
    }

    public func admit(_ request: CacheRequest) {
        guard request.size <= capacity else { return }
        while used + request.size > capacity {
            let victim = bucketHead[minFrequency]
            unlinkFromBucket(victim, minFrequency)
            if bucketCount[minFrequency] == 0 { advanceMinimum() }
            dropResident(victim)
        }
        minFrequency = 1
        let n = newResident(request)
        nodes.b[Int(n)] = 1
        appendToBucket(n, 1)
    }

    public func remove(_ id: UInt64) -> Bool {
        guard let n = index.get(id) else { return false }
        let f = Int(nodes.b[Int(n)])
        unlinkFromBucket(n, f)
        dropResident(n, report: false)
        if f == minFrequency && bucketCount[f] == 0 { advanceMinimum() }
        return true
    }

    private func advanceMinimum() {
        var f = minFrequency + 1
        while f <= maxFrequency {
            if bucketCount[f] > 0 {
                minFrequency = f
                return
            }
            f += 1
        }
    }

    private func appendToBucket(_ n: Int32, _ f: Int) {
        while bucketHead.count <= f {
            bucketHead.append(NodeStore.none)
            bucketTail.append(NodeStore.none)
            bucketCount.append(0)
        }
        let i = Int(n)
        nodes.next[i] = NodeStore.none
        nodes.prev[i] = bucketTail[f]
        if bucketTail[f] != NodeStore.none { nodes.next[Int(bucketTail[f])] = n } else { bucketHead[f] = n }
        bucketTail[f] = n
        bucketCount[f] += 1
    }

    private func unlinkFromBucket(_ n: Int32, _ f: Int) {
        let i = Int(n)
        let p = nodes.prev[i]
        let q = nodes.next[i]
        if p != NodeStore.none { nodes.next[Int(p)] = q } else { bucketHead[f] = q }
        if q != NodeStore.none { nodes.prev[Int(q)] = p } else { bucketTail[f] = p }
        bucketCount[f] -= 1
    }
}

/// Belady (MIN): evict the object whose next request is furthest in the future.
///
/// Belady, "A study of replacement algorithms for a virtual-storage computer", 1966. Needs each request's next
/// access time (``CacheRequest/nextAccess``), so it runs only in the simulator, where it gives the lowest miss
/// count any policy can reach with unit-size objects: the bar the others are measured against.
public final class Belady: PolicyBase, EvictionPolicy {
    /// A max-heap of nodes ordered by next access; a node's heap position is kept in `nodes.a`.
    private var heap: [Int32] = []

    public var name: String { "belady" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id) else { return false }
        nodes.b[Int(n)] = request.nextAccess
        let position = Int(nodes.a[Int(n)])
        siftUp(position)
        siftDown(Int(nodes.a[Int(n)]))
        return true
    }

    public func admit(_ request: CacheRequest) {
        guard request.size <= capacity else { return }
        while used + request.size > capacity {
            let victim = heap[0]
            removeFromHeap(0)
            dropResident(victim)
        }
        let n = newResident(request)
        nodes.b[Int(n)] = request.nextAccess
        heap.append(n)
        nodes.a[Int(n)] = Int32(heap.count - 1)
        siftUp(heap.count - 1)
    }

    public func remove(_ id: UInt64) -> Bool {
        guard let n = index.get(id) else { return false }
        removeFromHeap(Int(nodes.a[Int(n)]))
        dropResident(n, report: false)
        return true
    }

    private func removeFromHeap(_ position: Int) {
        let last = heap.removeLast()
        guard position < heap.count else { return }
        heap[position] = last
        nodes.a[Int(last)] = Int32(position)
        siftUp(position)
        siftDown(Int(nodes.a[Int(last)]))
    }

    private func key(_ position: Int) -> Int64 { nodes.b[Int(heap[position])] }

    private func swapAt(_ i: Int, _ j: Int) {
        heap.swapAt(i, j)
        nodes.a[Int(heap[i])] = Int32(i)
        nodes.a[Int(heap[j])] = Int32(j)
    }

    private func siftUp(_ start: Int) {
        var i = start
        while i > 0 {
            let parent = (i - 1) / 2
            guard key(i) > key(parent) else { return }
            swapAt(i, parent)
            i = parent
        }
    }

    private func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var largest = i
            if l < heap.count && key(l) > key(largest) { largest = l }
            if r < heap.count && key(r) > key(largest) { largest = r }
            if largest == i { return }
            swapAt(i, largest)
            i = largest
        }
    }
}
