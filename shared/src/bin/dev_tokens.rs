//! Prints a service token and a user token signed with the configured AUTH_JWT_SECRET,
//! for the local main job and manual testing: `dev_tokens [uid] [ttl_secs]` (scripts/dev.sh
//! runs it).

use call_shared::{auth::Auth, config::Config};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let mut args = std::env::args().skip(1);
    let uid = args.next().unwrap_or_else(|| "user_001".to_owned());
    let ttl: u64 = args
        .next()
        .map(|t| t.parse())
        .transpose()?
        .unwrap_or(86_400);
    let auth = Auth::new(&config.auth_jwt_secret);
    println!("SERVICE_TOKEN={}", auth.mint("local-backend", true, ttl)?);
    println!("USER_TOKEN={}", auth.mint(&uid, false, ttl)?);
    println!("USER_UID={uid}");
    Ok(())
}
