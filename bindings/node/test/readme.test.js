'use strict'
// The README's "Using it from JavaScript" example, run as written.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { freshDir, repository } = require('./helpers')

test('the README example runs and prints what it says', () => {
  const readme = fs.readFileSync(path.join(repository, 'README.md'), 'utf8')
  const section = readme.split(/^## Using it from JavaScript$/m)[1]
  assert.ok(section, 'README.md has no "## Using it from JavaScript" section')
  const example = section.match(/```js\n([\s\S]*?)```/)
  assert.ok(example, 'the section has no ```js example')
  const expected = section.match(/```text\n([\s\S]*?)```/)
  assert.ok(expected, 'the section has no ```text block with the expected output')
  // Inside the package directory, so that `require('strata-event-store')` finds the package itself.
  const file = path.join(__dirname, 'fixtures', 'readme-example.generated.js')
  fs.writeFileSync(file, example[1])
  try {
    const output = execFileSync(process.execPath, [file], { cwd: freshDir(), encoding: 'utf8', env: { ...process.env } })
    assert.equal(output.trim(), expected[1].trim())
  } finally {
    fs.rmSync(file, { force: true })
  }
})
