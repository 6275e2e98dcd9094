//! The client's side of a key pair: encryption of quantized inputs and decryption of a
//! program's outputs.

use super::error::RuntimeError;
use super::keys::ClientKey;
use super::{delta, modulus};
use crate::backend::{Operand, Program};
use tfhe::core_crypto::prelude::*;

type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl ClientKey {
    /// Encrypts integers under the registers' big (GLWE-derived) key, as one seeded list.
    pub fn encrypt(&self, values: &[i64]) -> SeededLweCiphertextListOwned<u64> {
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let noise =
            Gaussian::from_dispersion_parameter(StandardDev(self.info.home().glwe_std), 0.0);
        let big = self.glwe.as_lwe_secret_key();
        let d = delta(self.info.msg_bits);
        let plain = PlaintextList::from_container(
            values
                .iter()
                .map(|&v| (v as u64).wrapping_mul(d))
                .collect::<Vec<u64>>(),
        );
        let mut out = SeededLweCiphertextList::new(
            0u64,
            big.lwe_dimension().to_lwe_size(),
            LweCiphertextCount(values.len()),
            seeder.seed().into(),
            modulus(),
        );
        encrypt_seeded_lwe_ciphertext_list(&big, &mut out, &plain, noise, seeder);
        out
    }

    /// Decrypts one integer known to lie in `[lo, lo + 2^(B+1))`.
    pub fn decrypt_one(&self, ct: &LweCiphertextView<'_, u64>, lo: i64) -> i64 {
        let big = self.glwe.as_lwe_secret_key();
        let phase = decrypt_lwe_ciphertext(&big, ct).0;
        let b = self.info.msg_bits + 1;
        // round to the nearest multiple of Δ, keep B+1 bits
        let d = delta(self.info.msg_bits);
        let code = (phase.wrapping_add(d / 2) / d) & ((1u64 << b) - 1);
        let lo_code = (lo as u64) & ((1u64 << b) - 1);
        lo + (code.wrapping_sub(lo_code) & ((1u64 << b) - 1)) as i64
    }

    /// Decrypts one sample's program outputs, one integer vector per output.
    ///
    /// # Errors
    /// Ciphertext lists that do not match the program's outputs.
    pub fn decrypt(
        &self,
        prog: &Program,
        outs: &[LweCiphertextListOwned<u64>],
    ) -> Result<Vec<Vec<i64>>> {
        if outs.len() != prog.outputs.len() {
            return Err(RuntimeError::mismatch(format!(
                "the encrypted result has {} output(s), the model {}",
                outs.len(),
                prog.outputs.len()
            )));
        }
        prog.outputs
            .iter()
            .zip(outs)
            .map(|(o, cts)| {
                let n_regs = o.elems.iter().filter(|e| matches!(e, Operand::Reg(_))).count();
                let big = self.glwe.polynomial_size().0 * self.glwe.glwe_dimension().0;
                if cts.lwe_ciphertext_count().0 != n_regs || cts.lwe_size().0 != big + 1 {
                    return Err(RuntimeError::mismatch(format!(
                        "the encrypted result holds {} ciphertext(s) of size {}, the model expects {} of size {}",
                        cts.lwe_ciphertext_count().0,
                        cts.lwe_size().0,
                        n_regs,
                        big + 1
                    )));
                }
                let mut it = cts.iter();
                Ok(o.elems
                    .iter()
                    .zip(&o.lo)
                    .enumerate()
                    .map(|(i, (e, &lo))| match e {
                        Operand::Const(v) => o.read(i, *v),
                        Operand::Reg(_) => o.read(
                            i,
                            it.next().map_or(lo, |ct| self.decrypt_one(&ct, lo)),
                        ),
                    })
                    .collect())
            })
            .collect()
    }

    /// Decrypts every register of a program run (debugging and noise measurements).
    pub fn decrypt_registers(
        &self,
        regs: &[Option<LweCiphertextOwned<u64>>],
        lo: &[i64],
    ) -> Vec<Option<i64>> {
        regs.iter()
            .zip(lo)
            .map(|(r, &lo)| r.as_ref().map(|ct| self.decrypt_one(&ct.as_view(), lo)))
            .collect()
    }
}
