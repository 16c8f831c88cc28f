"""The dealer: what a data party calls (:mod:`.provider`, CrypTen's tuple provider), the
dealer member's loop (:mod:`.server`), what both agree on (:mod:`.protocol`) and the DP noise
it deals (:mod:`.noise`)."""
