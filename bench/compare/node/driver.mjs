// The comparison's @segment/analytics-node driver: reads the generated
// NDJSON, calls identify for each customer with the traits the segment-sync
// CLI's default mapping makes, then closeAndFlush. Library defaults apart
// from the host. Usage: node driver.mjs PATH (SEGMENT_HOST, SEGMENT_WRITE_KEY).
import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { Analytics } from '@segment/analytics-node'

const analytics = new Analytics({
  writeKey: process.env.SEGMENT_WRITE_KEY ?? 'compare',
  host: process.env.SEGMENT_HOST,
})
let errors = 0
analytics.on('error', () => { errors += 1 })

const lines = createInterface({ input: createReadStream(process.argv[2]), crlfDelay: Infinity })
for await (const line of lines) {
  if (!line) continue
  const c = JSON.parse(line)
  analytics.identify({
    userId: c.customer_id,
    traits: {
      address: { city: c.city, country: c.country, postalCode: c.postal_code },
      company: { name: c.company_name },
      createdAt: c.created_at,
      email: c.email,
      firstName: c.first_name,
      lastName: c.last_name,
      lifetime_value: c.lifetime_value,
      phone: c.phone,
      plan: c.plan,
    },
  })
}
await analytics.closeAndFlush({ timeout: 600_000 })
console.log(`failed ${errors}`)
