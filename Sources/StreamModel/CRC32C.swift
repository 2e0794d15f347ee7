import CChecksum

/// CRC32C is the Castagnoli CRC (iSCSI, RFC 3720 appendix B.4): reflected polynomial 0x82F63B78,
/// initial value and final XOR 0xFFFFFFFF. `CRC32C.checksum("123456789")` is 0xE3069283.
///
/// The CPU's CRC32C instruction where it has one (SSE 4.2 on x86-64, checked at run time), else software
/// slicing-by-8 (eight 256-entry tables, eight bytes a step). It is the checksum of every event frame and every
/// journal record.
public enum CRC32C {
    static let polynomial: UInt32 = 0x82F6_3B78

    /// tables[k][b] is the CRC of byte b followed by k zero bytes.
    static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for b in 0..<256 {
            var crc = UInt32(b)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ polynomial : crc >> 1 }
            t[0][b] = crc
        }
        for b in 0..<256 {
            var crc = t[0][b]
            for k in 1..<8 {
                crc = t[0][Int(crc & 0xFF)] ^ (crc >> 8)
                t[k][b] = crc
            }
        }
        return t
    }()

    /// The flat form of ``tables`` that the hot loop reads: entry k*256+b.
    static let flat: [UInt32] = tables.flatMap { $0 }

    /// Returns the CRC32C of `bytes`, continuing from `crc` (the result of an earlier call, or 0 to start).
    /// - Complexity: O(n), eight bytes a step (the CPU's instruction where it has one, else tables).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        if hardware, let base = bytes.baseAddress {
            return ~eddy_crc32c_hardware(~crc, base, bytes.count)
        }
        return portableChecksum(bytes, continuing: crc)
    }

    /// Whether ``checksum(_:continuing:)`` uses the CPU's CRC32C instruction (SSE 4.2 on x86-64).
    public static let hardware = eddy_crc32c_hardware_available() == 1

    /// The table-driven CRC32C (slicing by eight), used where the CPU has no CRC32C instruction.
    static func portableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        var c = ~crc
        var i = 0
        let n = bytes.count
        flat.withUnsafeBufferPointer { t in
            while n - i >= 8 {
                let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                let lo = UInt32(truncatingIfNeeded: word) ^ c
                let hi = UInt32(truncatingIfNeeded: word >> 32)
                c =
                    t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                c = t[Int((c ^ UInt32(bytes[i])) & 0xFF)] ^ (c >> 8)
                i += 1
            }
        }
        return ~c
    }

    /// Returns the CRC32C of a byte array or any contiguous byte collection.
    public static func checksum<C: Collection>(_ bytes: C, continuing crc: UInt32 = 0) -> UInt32
    where C.Element == UInt8 {
        if let r = bytes.withContiguousStorageIfAvailable({ checksum(UnsafeRawBufferPointer($0), continuing: crc) }) {
            return r
        }
        return Array(bytes).withUnsafeBytes { checksum($0, continuing: crc) }
    }
}
