/// IDMap maps 64-bit object IDs to 32-bit slots: open addressing with linear probing and backward-shift
/// deletion (no tombstones), kept at most half full. It is the index every policy keeps beside its lists;
/// a dictionary would do, but this is several times faster on the simulator's hot path.
///
/// Not thread-safe: a policy is confined to its owner (one cache shard, or the simulator's loop).
public final class IDMap {
    private var keys: UnsafeMutablePointer<UInt64>
    private var values: UnsafeMutablePointer<Int32>  // -1 = empty
    private var mask: Int
    /// Number of entries.
    public private(set) var count = 0

    /// Creates a map sized for about `capacity` entries (it grows as needed).
    public init(capacity: Int = 16) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = .allocate(capacity: size)
        values = .allocate(capacity: size)
        values.initialize(repeating: -1, count: size)
        keys.initialize(repeating: 0, count: size)
        mask = size - 1
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    @inline(__always)
    private func home(_ key: UInt64) -> Int {
        // Fibonacci hashing: the high bits of key * 2^64/phi spread sequential IDs well.
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 20) & mask
    }

    /// The slot stored for `key`, or nil.
    @inline(__always)
    public func get(_ key: UInt64) -> Int32? {
        var i = home(key)
        while true {
            let v = values[i]
            if v < 0 { return nil }
            if keys[i] == key { return v }
            i = (i + 1) & mask
        }
    }

    /// Stores `value` for `key`, replacing any previous value.
    public func set(_ key: UInt64, _ value: Int32) {
        if (count + 1) * 2 > mask + 1 { grow() }
        var i = home(key)
        while values[i] >= 0 {
            if keys[i] == key {
                values[i] = value
                return
            }
            i = (i + 1) & mask
        }
        keys[i] = key
        values[i] = value
        count += 1
    }

    /// Removes `key`; returns its value, or nil if absent.
    @discardableResult
    public func remove(_ key: UInt64) -> Int32? {
        var i = home(key)
        while true {
            let v = values[i]
            if v < 0 { return nil }
            if keys[i] == key { break }
            i = (i + 1) & mask
        }
        let removed = values[i]
        // Backward shift: move later entries of the probe run into the hole when their home allows it.
        var hole = i
        var j = (i + 1) & mask
        while values[j] >= 0 {
            let h = home(keys[j])
            let between = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j)
            if !between {
                keys[hole] = keys[j]
                values[hole] = values[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        values[hole] = -1
        count -= 1
        return removed
    }

    private func grow() {
        let oldKeys = keys
        let oldValues = values
        let oldSize = mask + 1
        let size = oldSize * 2
        keys = .allocate(capacity: size)
        values = .allocate(capacity: size)
        values.initialize(repeating: -1, count: size)
        keys.initialize(repeating: 0, count: size)
        mask = size - 1
        count = 0
        for i in 0..<oldSize where oldValues[i] >= 0 { set(oldKeys[i], oldValues[i]) }
        oldKeys.deallocate()
        oldValues.deallocate()
    }
}
