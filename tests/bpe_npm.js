// Encodes a text file with npm's gpt-3-encoder, for tests/bpe_npm.sh.
//
//   node bpe_npm.js PACKAGE_DIR whole|lines TEXT OUT_TEXT OUT_IDS
//
// Reads TEXT as UTF-8 (invalid sequences become U+FFFD, as the package
// sees them), writes that string back as UTF-8 to OUT_TEXT (the bytes that
// xgrad must encode the same way) and the package's token ids, one a line,
// to OUT_IDS: for the whole text, or with "lines" for each line on its own
// (without its "\n"), the ids one after another. Fails if the package's
// decode does not give the text back.
//
// The package's encode concatenates arrays, which takes time quadratic in
// the number of tokens; the whole text is therefore encoded in chunks cut
// after a "\n" that has a non-space on both sides. Such a "\n" is a piece
// of its own in the whole text and at the end of a chunk alike (a
// whitespace run of one character), and no piece takes a non-space along
// after whitespace other than " ", so the chunks' ids put together are the
// ids of the whole text.
'use strict';
const fs = require('fs');
const [pkgDir, mode, inPath, outText, outIds] = process.argv.slice(2);
const { encode, decode } = require(pkgDir);

const raw = fs.readFileSync(inPath);
const text = new TextDecoder('utf-8').decode(raw);
const bytes = Buffer.from(text, 'utf8');
if (!bytes.equals(raw))
  console.log(`${inPath}: invalid UTF-8 replaced by U+FFFD`);
fs.writeFileSync(outText, bytes);

let parts;
if (mode === 'lines') {
  parts = text.split('\n');
} else if (mode === 'whole') {
  parts = [];
  let chunk = '';
  for (const s of text.split(/(?<=\S\n)(?=\S)/u)) {
    chunk += s;
    if (chunk.length >= 4096) {
      parts.push(chunk);
      chunk = '';
    }
  }
  parts.push(chunk);
} else {
  throw new Error(`unknown mode ${mode}`);
}

const ids = [];
for (const p of parts) {
  const t = encode(p);
  if (decode(t) !== p)
    throw new Error(`${inPath}: the package's decode(encode(s)) !== s`);
  for (const id of t) {
    if (!Number.isInteger(id))
      throw new Error(`${inPath}: the package gave a token ${id}`);
    ids.push(id);
  }
}
fs.writeFileSync(outIds, ids.join('\n') + '\n');
