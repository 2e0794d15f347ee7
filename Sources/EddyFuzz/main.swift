// The libFuzzer entry point over every decoder of hostile input (EddyFuzzing's FuzzTarget; the target is chosen
// by EDDY_FUZZ_TARGET). scripts/fuzz.sh builds it with `-sanitize=fuzzer,address -parse-as-library -D EDDY_FUZZ` (EDDY_FUZZ_BUILD=1 in
// Package.swift):
// SwiftPM links an executable's entry point under the name EddyFuzz_main, so that is defined here and hands the
// command line to libFuzzer's driver. A normal build makes an executable that does nothing.
import EddyFuzzing

#if EDDY_FUZZ
    import CFuzzDriver

    enum Selected {
        static let target = FuzzTarget.fromEnvironment()
    }

    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
        Selected.target.run(count == 0 ? [] : Array(UnsafeBufferPointer(start: start, count: count)))
        return 0
    }

    @_cdecl("EddyFuzz_main")
    public func fuzzMain(
        _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
    ) -> CInt {
        var count = argc
        var arguments = argv
        // Keys and files the target makes once, made before the first input (so what the libraries allocate for
        // them for good is not taken for that input's leak).
        Selected.target.prepare()
        return LLVMFuzzerRunDriver(&count, &arguments, fuzzOneInput)
    }
#endif
