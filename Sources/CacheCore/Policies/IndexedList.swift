/// IndexedList is one LRU list with its own index: the building block of policies that keep the same ID in
/// several structures at once (LIRS's stacks S and Q).
final class IndexedList {
    let nodes = NodeStore()
    let index = IDMap()
    /// When set, every entry also takes a record from this model, as libCacheSim's objects take memory from malloc.
    var records: RecordReuseModel?

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
        records?.allocate(self, id, size)
        return n
    }

    func moveToHead(_ n: Int32) { nodes.moveToHead(n, 0) }

    @discardableResult
    func remove(_ id: UInt64) -> Bool {
        guard let n = index.remove(id) else { return false }
        records?.release(self, id)
        nodes.unlink(n)
        nodes.free(n)
        return true
    }

    func id(_ n: Int32) -> UInt64 { nodes.id[Int(n)] }
    func size(_ n: Int32) -> Int64 { nodes.size[Int(n)] }
}

/// A model of how libCacheSim's C code reuses the memory of freed cache objects: glibc hands back the most recently
/// freed block of a size first, so the next object created takes the record (and so the `obj_size` field) of the
/// last one freed. It exists so a test can reproduce, request for request, one place where libCacheSim's LIRS reads
/// an object after freeing it (see ``LIRS/freedSizeReads``); Eddy's own caches never set it.
final class RecordReuseModel {
    private var free: [Int] = []
    private var sizes: [Int64] = []
    private var owners: [ObjectIdentifier: [UInt64: Int]] = [:]

    func allocate(_ list: IndexedList, _ id: UInt64, _ size: Int64) {
        let record: Int
        if let reused = free.popLast() {
            record = reused
        } else {
            record = sizes.count
            sizes.append(0)
        }
        sizes[record] = size
        owners[ObjectIdentifier(list), default: [:]][id] = record
    }

    func release(_ list: IndexedList, _ id: UInt64) {
        if let record = owners[ObjectIdentifier(list)]?.removeValue(forKey: id) { free.append(record) }
    }

    /// The record `list`'s entry for `id` holds now.
    func record(_ list: IndexedList, _ id: UInt64) -> Int? { owners[ObjectIdentifier(list)]?[id] }

    /// The size last written into `record` (by its current owner, or by the last one if it is free).
    func size(of record: Int) -> Int64 { sizes[record] }
}
