//! The scanner under [`super`]: PostgreSQL's lexical rules as far as
//! statement structure goes. Whitespace and comments are skipped; string
//! literals, quoted identifiers and dollar-quoted bodies become single tokens,
//! so nothing inside them is ever read as a keyword or a `;`.

/// Statement keywords are short; anything longer is not one we look for.
pub(in crate::route) const KEYWORD_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::route) enum Kind {
    /// A keyword or unquoted identifier.
    Word,
    /// `"identifier"`.
    Quoted,
    /// `U&"identifier"`: its escapes are not decoded.
    UnicodeQuoted,
    /// Any string literal: `'...'`, `E'...'`, `U&'...'`, `$tag$...$tag$`.
    Str,
    Semi,
    Open,
    Close,
    Dot,
    Equals,
    /// Numbers, `$1` parameters, operators, other punctuation.
    Other,
}

/// A token as byte offsets into the lexer's text.
#[derive(Debug, Clone, Copy)]
pub(in crate::route) struct Token {
    pub(in crate::route) kind: Kind,
    pub(in crate::route) start: usize,
    pub(in crate::route) end: usize,
    /// Between the quotes of a Str, Quoted or UnicodeQuoted token.
    pub(in crate::route) body_start: usize,
    pub(in crate::route) body_end: usize,
    /// False when the text ended before the closing quote.
    pub(in crate::route) closed: bool,
}

impl Token {
    pub(in crate::route) fn new(kind: Kind, start: usize, end: usize) -> Token {
        Token { kind, start, end, body_start: start, body_end: end, closed: true }
    }
}

/// PostgreSQL's scanner, as far as structure goes. The text holds no NUL, so
/// `at` can use 0 for "past the end". Copy, so lookahead is a copy.
#[derive(Debug, Clone, Copy)]
pub(in crate::route) struct Lexer<'a> {
    pub(in crate::route) sql: &'a [u8],
    pub(in crate::route) pos: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Continues a dollar-quote tag: an identifier character other than `$`.
fn is_tag_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

pub(in crate::route) fn is_ident_cont(b: u8) -> bool {
    is_tag_cont(b) || b == b'$'
}

impl<'a> Lexer<'a> {
    pub(in crate::route) fn at(&self, i: usize) -> u8 {
        self.sql.get(i).copied().unwrap_or(0)
    }

    pub(in crate::route) fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        self.sql.get(start..end).unwrap_or_default()
    }

    pub(in crate::route) fn text(&self, t: Token) -> &'a [u8] {
        self.slice(t.start, t.end)
    }

    pub(in crate::route) fn body(&self, t: Token) -> &'a [u8] {
        self.slice(t.body_start, t.body_end)
    }

    pub(in crate::route) fn peek(&self) -> Option<Token> {
        let mut copy = *self;
        copy.next()
    }

    /// Whether `t` is the keyword `kw` (given in lowercase).
    pub(in crate::route) fn is(&self, t: Token, kw: &str) -> bool {
        t.kind == Kind::Word && self.text(t).eq_ignore_ascii_case(kw.as_bytes())
    }

    /// Whether `t` names the identifier `name` (lowercase): unquoted in any
    /// case, or quoted exactly.
    pub(in crate::route) fn ident_is(&self, t: Token, name: &str) -> bool {
        match t.kind {
            Kind::Word => self.text(t).eq_ignore_ascii_case(name.as_bytes()),
            Kind::Quoted => t.closed && self.body(t) == name.as_bytes(),
            _ => false,
        }
    }

    /// The lowercased text of a word that fits `buf`.
    pub(in crate::route) fn keyword<'b>(&self, t: Token, buf: &'b mut [u8; KEYWORD_MAX]) -> Option<&'b [u8]> {
        if t.kind != Kind::Word {
            return None;
        }
        let text = self.text(t);
        let out = buf.get_mut(..text.len())?;
        out.copy_from_slice(text);
        out.make_ascii_lowercase();
        Some(out)
    }

    /// Consumes the next token if it is the keyword `kw`.
    pub(in crate::route) fn eat(&mut self, kw: &str) -> bool {
        let mut copy = *self;
        match copy.next() {
            Some(t) if self.is(t, kw) => {
                *self = copy;
                true
            }
            _ => false,
        }
    }

    pub(in crate::route) fn eat_kind(&mut self, kind: Kind) -> bool {
        let mut copy = *self;
        match copy.next() {
            Some(t) if t.kind == kind => {
                *self = copy;
                true
            }
            _ => false,
        }
    }

    pub(in crate::route) fn skip_trivia(&mut self) {
        loop {
            match self.at(self.pos) {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.pos += 1,
                b'-' if self.at(self.pos + 1) == b'-' => {
                    self.pos += 2;
                    while let Some(&b) = self.sql.get(self.pos) {
                        if b == b'\n' || b == b'\r' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                b'/' if self.at(self.pos + 1) == b'*' => {
                    // Block comments nest, unlike in C.
                    self.pos += 2;
                    let mut depth = 1u32;
                    while depth > 0 {
                        match (self.sql.get(self.pos), self.at(self.pos + 1)) {
                            (None, _) => return,
                            (Some(b'/'), b'*') => {
                                depth += 1;
                                self.pos += 2;
                            }
                            (Some(b'*'), b'/') => {
                                depth -= 1;
                                self.pos += 2;
                            }
                            _ => self.pos += 1,
                        }
                    }
                }
                _ => return,
            }
        }
    }

    pub(in crate::route) fn next(&mut self) -> Option<Token> {
        self.skip_trivia();
        let start = self.pos;
        let kind = match *self.sql.get(start)? {
            b'\'' => return Some(self.quoted(Kind::Str, start, start, false)),
            b'"' => return Some(self.quoted(Kind::Quoted, start, start, false)),
            b'$' => return Some(self.dollar(start)),
            b'0'..=b'9' => return Some(self.number(start)),
            b'.' if self.at(start + 1).is_ascii_digit() => return Some(self.number(start)),
            b if is_ident_start(b) => return Some(self.word(start)),
            b';' => Kind::Semi,
            b'(' => Kind::Open,
            b')' => Kind::Close,
            b'.' => Kind::Dot,
            b'=' => Kind::Equals,
            _ => Kind::Other,
        };
        self.pos = start + 1;
        Some(Token::new(kind, start, self.pos))
    }

    /// A literal or identifier opened by the quote at `open`, which the
    /// prefix from `start` (E, U&) precedes. A doubled quote stands for
    /// itself; with `backslash` (E'...'), so does a backslash-escaped byte.
    pub(in crate::route) fn quoted(&mut self, kind: Kind, start: usize, open: usize, backslash: bool) -> Token {
        let quote = self.at(open);
        let mut i = open + 1;
        let (body_end, end, closed) = loop {
            match self.sql.get(i) {
                None => break (self.sql.len(), self.sql.len(), false),
                Some(b'\\') if backslash => i += 2,
                Some(&b) if b == quote && self.at(i + 1) == quote => i += 2,
                Some(&b) if b == quote => break (i, i + 1, true),
                Some(_) => i += 1,
            }
        };
        self.pos = end;
        Token { kind, start, end, body_start: open + 1, body_end, closed }
    }

    /// `$1`, or a `$tag$ ... $tag$` string (the tag may be empty), or a lone `$`.
    pub(in crate::route) fn dollar(&mut self, start: usize) -> Token {
        let mut i = start + 1;
        if self.at(i).is_ascii_digit() {
            while self.at(i).is_ascii_digit() {
                i += 1;
            }
            self.pos = i;
            return Token::new(Kind::Other, start, i);
        }
        if is_ident_start(self.at(i)) {
            while is_tag_cont(self.at(i)) {
                i += 1;
            }
        }
        if self.at(i) != b'$' {
            self.pos = start + 1;
            return Token::new(Kind::Other, start, self.pos);
        }
        let tag = self.slice(start, i + 1);
        let body_start = i + 1;
        // The body ends at the first occurrence of the same tag.
        let rest = self.slice(body_start, self.sql.len());
        // `tag` is at least `$$`, so the window is never empty.
        let (body_end, end, closed) = match rest.windows(tag.len().max(1)).position(|w| w == tag) {
            Some(at) => (body_start + at, body_start + at + tag.len(), true),
            None => (self.sql.len(), self.sql.len(), false),
        };
        self.pos = end;
        Token { kind: Kind::Str, start, end, body_start, body_end, closed }
    }

    /// Digits and whatever letters, dots and underscores cling to them
    /// (`1e5`, `0x1F`, `1_000`): only their extent matters.
    pub(in crate::route) fn number(&mut self, start: usize) -> Token {
        let mut i = start + 1;
        while matches!(self.at(i), b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'.') {
            i += 1;
        }
        self.pos = i;
        Token::new(Kind::Other, start, i)
    }

    /// An identifier or keyword, or the E / U& prefix of a literal.
    pub(in crate::route) fn word(&mut self, start: usize) -> Token {
        let mut i = start + 1;
        while is_ident_cont(self.at(i)) {
            i += 1;
        }
        // Like the server's scanner, the longest match wins: `e'` opens an
        // escape string only when the e stands alone (`ne'x'` is ne, 'x').
        if i == start + 1 {
            match (self.at(start) | 0x20, self.at(i), self.at(i + 1)) {
                (b'e', b'\'', _) => return self.quoted(Kind::Str, start, i, true),
                (b'u', b'&', b'\'') => return self.quoted(Kind::Str, start, i + 1, false),
                (b'u', b'&', b'"') => return self.quoted(Kind::UnicodeQuoted, start, i + 1, false),
                _ => {}
            }
        }
        self.pos = i;
        Token::new(Kind::Word, start, i)
    }
}
