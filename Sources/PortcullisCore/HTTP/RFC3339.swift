import Foundation
/// RFC 3339 timestamps: formatting in UTC without Foundation's (slow, locale-aware) formatters,
/// and parsing (`2026-12-31T23:59:59Z`, `...+02:00`, fractional seconds ignored) to Unix seconds.
public enum RFC3339 {
    /// Formats `date` in UTC; `milliseconds` adds a `.mmm` fraction (for logs).
    public static func format(_ date: Date, milliseconds: Bool = false) -> String {
        String(unsafeUninitializedCapacity: 24) { write(date, milliseconds: milliseconds, into: $0) }
    }

    /// Appends what `format` returns to `bytes`, without making the `String` (the access log).
    public static func append<Sink: ByteSink>(_ date: Date, milliseconds: Bool = false, to bytes: inout Sink) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { out in
            let n = write(date, milliseconds: milliseconds, into: out)
            bytes.append(bytes: UnsafeBufferPointer(rebasing: out[..<n]))
        }
    }

    /// Writes the text into `out` (at least 24 bytes); returns its length.
    private static func write(_ date: Date, milliseconds: Bool, into out: UnsafeMutableBufferPointer<UInt8>) -> Int {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 { secondOfDay += 86_400; days -= 1 }
        // Howard Hinnant's civil-from-days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        let millis = milliseconds ? Int(min(999, max(0, (date.timeIntervalSince1970 - Double(seconds)) * 1000))) : -1
        // Written digit by digit into one buffer: the access log formats a time per request,
        // and interpolating padded pieces cost a dozen small strings each time.
        do {
            var i = 0
            func put(_ value: Int64, _ width: Int) {
                var v = value
                var k = width - 1
                while k >= 0 {
                    out[i + k] = UInt8(truncatingIfNeeded: 0x30 + v % 10)
                    v /= 10
                    k -= 1
                }
                i += width
            }
            func mark(_ c: Unicode.Scalar) {
                out[i] = UInt8(ascii: c)
                i += 1
            }
            put(year, 4); mark("-"); put(month, 2); mark("-"); put(day, 2); mark("T")
            put(secondOfDay / 3600, 2); mark(":"); put(secondOfDay % 3600 / 60, 2); mark(":"); put(secondOfDay % 60, 2)
            if millis >= 0 { mark("."); put(Int64(millis), 3) }
            mark("Z")
            return i
        }
    }

    public static func parse(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        func num(_ from: Int, _ len: Int) -> Int64? {
            guard from + len <= b.count else { return nil }
            var v: Int64 = 0
            for c in b[from..<(from + len)] {
                guard c >= 0x30 && c <= 0x39 else { return nil }
                v = v * 10 + Int64(c - 0x30)
            }
            return v
        }
        guard b.count >= 20, b[4] == 0x2D, b[7] == 0x2D, b[10] == 0x54 || b[10] == 0x74, b[13] == 0x3A, b[16] == 0x3A,
              let year = num(0, 4), let month = num(5, 2), let day = num(8, 2),
              let hour = num(11, 2), let minute = num(14, 2), let second = num(17, 2),
              (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year),
              hour < 24, minute < 60, second < 61
        else { return nil }
        var i = 19
        if b[i] == 0x2E {
            i += 1
            let start = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            if i == start { return nil }
        }
        guard i < b.count else { return nil }
        var offset: Int64 = 0
        if b[i] == 0x5A || b[i] == 0x7A {
            guard i + 1 == b.count else { return nil }
        } else if b[i] == 0x2B || b[i] == 0x2D {
            guard i + 6 == b.count, b[i + 3] == 0x3A, let oh = num(i + 1, 2), let om = num(i + 4, 2), oh < 24, om < 60 else { return nil }
            offset = (oh * 3600 + om * 60) * (b[i] == 0x2B ? 1 : -1)
        } else {
            return nil
        }
        return daysFromCivil(year: year, month: month, day: day) * 86_400 + hour * 3600 + minute * 60 + min(second, 59) - offset
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}
