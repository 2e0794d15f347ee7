/// S3XML reads the few XML documents the S3 client needs (`ListBucketResult`, `Error`): the text of named
/// elements, with XML's five entities and numeric character references decoded. S3's answers are flat records
/// without attributes on the elements Eddy reads, so a scan for `<Name>...</Name>` is exact for them; it is not
/// a general XML parser and is used for nothing else.
enum S3XML {
    /// The raw inner text of each `<name>...</name>` in `xml`, in document order. `<name/>` counts as empty.
    static func elements(_ name: String, in xml: Substring) -> [Substring] {
        var result: [Substring] = []
        let open = "<" + name
        let close = "</" + name + ">"
        var rest = xml[...]
        while let start = rest.firstRange(of: open) {
            let afterName = start.upperBound
            guard afterName < rest.endIndex else { break }
            let next = rest[afterName]
            // `<Name>`, `<Name attr=...>` or `<Name/>`, but not `<NameSuffix>`.
            guard next == ">" || next == " " || next == "/" else {
                rest = rest[afterName...]
                continue
            }
            guard let tagEnd = rest[afterName...].firstIndex(of: ">") else { break }
            if rest[rest.index(before: tagEnd)] == "/" {
                result.append(rest[tagEnd..<tagEnd])
                rest = rest[rest.index(after: tagEnd)...]
                continue
            }
            let contentStart = rest.index(after: tagEnd)
            guard let end = rest[contentStart...].firstRange(of: close) else { break }
            result.append(rest[contentStart..<end.lowerBound])
            rest = rest[end.upperBound...]
        }
        return result
    }

    /// The decoded text of the first `<name>` element, or nil.
    static func text(_ name: String, in xml: Substring) -> String? {
        elements(name, in: xml).first.map(decode)
    }

    /// `text` with `&lt;` `&gt;` `&amp;` `&quot;` `&apos;` and `&#N;` / `&#xN;` decoded.
    static func decode(_ text: Substring) -> String {
        guard text.contains("&") else { return String(text) }
        var out = ""
        var rest = text
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            guard let semi = rest[amp...].firstIndex(of: ";") else { return out + rest[amp...] }
            let entity = rest[rest.index(after: amp)..<semi]
            switch entity {
            case "lt": out += "<"
            case "gt": out += ">"
            case "amp": out += "&"
            case "quot": out += "\""
            case "apos": out += "'"
            default:
                var scalar: Unicode.Scalar? = nil
                if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                    scalar = UInt32(entity.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init)
                } else if entity.hasPrefix("#") {
                    scalar = UInt32(entity.dropFirst(1)).flatMap(Unicode.Scalar.init)
                }
                if let scalar { out.unicodeScalars.append(scalar) } else { out += rest[amp...semi] }
            }
            rest = rest[rest.index(after: semi)...]
        }
        return out + rest
    }
}
