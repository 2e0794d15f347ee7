extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for bodies that throw ``EddyError``: the standard library's form only rethrows
    /// untyped errors.
    @inlinable
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(EddyError) -> R) throws(EddyError) -> R {
        let result: Result<R, EddyError> = withUnsafeBytes { b in Result { () throws(EddyError) in try body(b) } }
        return try result.get()
    }

    /// `withUnsafeMutableBytes` for bodies that throw ``EddyError``.
    @inlinable
    public mutating func withMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws(EddyError) -> R)
        throws(EddyError) -> R
    {
        let result: Result<R, EddyError> = withUnsafeMutableBytes { b in
            Result { () throws(EddyError) in try body(b) }
        }
        return try result.get()
    }
}
