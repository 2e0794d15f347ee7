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
