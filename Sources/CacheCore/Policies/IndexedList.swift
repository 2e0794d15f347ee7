/// IndexedList is one LRU list with its own index: the building block of policies that keep the same ID in
/// several structures at once (LIRS's stacks S and Q).
final class IndexedList {
    let nodes = NodeStore()
    let index = IDMap()

    var head: Int32 { nodes.head[0] }
    var tail: Int32 { nodes.tail[0] }
    var bytes: Int64 { nodes.bytes[0] }
    var isEmpty: Bool { nodes.count[0] == 0 }

    func find(_ id: UInt64) -> Int32? { index.get(id) }

    @discardableResult
    func insertHead(_ id: UInt64, _ size: Int64, flags: Int32 = 0) -> Int32 {
        let n = nodes.allocate(id: id, size: size)
        nodes.a[Int(n)] = flags
        index.set(id, n)
        nodes.pushHead(n, 0)
        return n
    }

    func moveToHead(_ n: Int32) { nodes.moveToHead(n, 0) }

    @discardableResult
    func remove(_ id: UInt64) -> Bool {
        guard let n = index.remove(id) else { return false }
        nodes.unlink(n)
        nodes.free(n)
        return true
    }

    func id(_ n: Int32) -> UInt64 { nodes.id[Int(n)] }
    func size(_ n: Int32) -> Int64 { nodes.size[Int(n)] }
}
