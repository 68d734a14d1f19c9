/// Random texts joined from pieces that matter to a parser, for tests that compare a fast path
/// with the general one it short-cuts.
extension SplitMix {
    /// `count` texts of up to five pieces each.
    mutating func texts(from pieces: [String], count: Int) -> [String] {
        (0..<count).map { _ in
            var text = ""
            for _ in 0..<(next() % 6) { text += pieces[Int(next() % UInt64(pieces.count))] }
            return text
        }
    }
}
