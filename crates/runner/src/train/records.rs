//! An epoch's records: each live model's row in `epochs.csv` and its TensorBoard events, the
//! epoch's line of progress, and a model's weights and `final.json` once it is done (after the
//! last epoch, or when its loss stopped being finite).

use anyhow::Result;
use spec::{EpochRow, FinalRecord, Protocol, Status, Stretch};
use tch::{Device, Kind, Tensor};

use super::claim::earlier_revisions;
use super::epoch::Evaluation;
use super::group::{Group, Member, Progress, Tally};
use super::{log, Job, Sweep};
use crate::checkpoint;
use crate::step::Stack;
use crate::tensorboard::unix_now_s;

/// How an epoch's records leave the training of a group.
pub(super) enum EpochEnd {
    /// Some model still trains and epochs remain: the epoch's checkpoint follows, then the
    /// next epoch.
    Continue,
    /// Training is over: after the last epoch every live model is finished (weights and
    /// `final.json`), or every model has diverged. No checkpoint follows.
    Over,
}

/// What an epoch's steps and evaluation came to, for every model of the stack.
struct EpochNumbers {
    /// The epoch, from 0.
    epoch: i64,
    /// Its first iteration.
    first: i64,
    /// The iteration it ends at (its last step's, counted from 1).
    last: i64,
    /// Its steps (all of them, also those trained before a resumption).
    steps: usize,
    /// Per step, per model: step `s`'s loss of model `i` at `s * K + i`.
    losses: Vec<f64>,
    /// Per model, the errors on its training batches.
    errors: Vec<i64>,
    /// Training images per second of one model, over the steps timed by this process.
    images_per_s: f64,
    /// Per model, the evaluation when one was due.
    test: Option<Vec<Evaluation>>,
    /// Training seconds so far (across resumptions).
    wall_s: f64,
}

impl EpochNumbers {
    /// Model `i`'s row, from `own`, its losses in the epoch's steps.
    fn row(&self, i: usize, own: &[f64], protocol: &Protocol) -> EpochRow {
        let steps = self.steps;
        let test = self.test.as_ref().map(|t| &t[i]);
        let gates = test.and_then(|t| t.gates);
        EpochRow {
            epoch: self.epoch + 1,
            iteration: self.last,
            lr: protocol.lr_at(self.last - 1),
            train_loss: own.iter().sum::<f64>() / steps as f64,
            train_error: 100.0 * self.errors[i] as f64
                / (steps as i64 * protocol.batch_size) as f64,
            test_loss: test.map(|t| t.loss),
            test_error: test.map(|t| t.error),
            wall_s: self.wall_s,
            images_per_s: self.images_per_s,
            gate_first: gates.map(|g| g[0]),
            gate_middle: gates.map(|g| g[1]),
            gate_last: gates.map(|g| g[2]),
        }
    }
}

impl Job<'_> {
    /// The epoch's accounting, evaluation and records: one row per live member (its mean
    /// training loss and error, and the test loss and error when due), divergence noted and
    /// recorded, and every member finished after the last epoch. Whether training goes on:
    /// [`EpochEnd`].
    pub(super) fn record_epoch(
        &self,
        group: &mut Group,
        epoch: i64,
        tally: Tally,
        sweep: &mut Sweep,
    ) -> Result<EpochEnd> {
        let numbers = self.epoch_numbers(group, epoch, tally)?;
        let Group {
            stack,
            members,
            progress,
            ..
        } = group;
        let k = stack.k() as usize;
        for (i, member) in members.iter_mut().enumerate() {
            if member.diverged_at.is_some() {
                continue;
            }
            self.record_member(stack, i, member, &numbers, progress, sweep)?;
        }
        let live: Vec<&Member> = members.iter().filter(|m| m.diverged_at.is_none()).collect();
        if let Some(row) = live.first().and_then(|m| m.rows.last()) {
            progress.report(&self.summary(row, epoch, numbers.images_per_s * k as f64));
        }
        if live.is_empty() {
            return Ok(EpochEnd::Over);
        }
        if numbers.last < self.protocol.iterations {
            return Ok(EpochEnd::Continue);
        }
        self.finish_live(stack, members, numbers.last, numbers.wall_s, sweep)?;
        Ok(EpochEnd::Over)
    }

    /// The epoch's numbers: the steps' losses and errors (copied from the device), the
    /// training speed, and the evaluation when one is due.
    fn epoch_numbers(&self, group: &Group, epoch: i64, tally: Tally) -> Result<EpochNumbers> {
        let protocol = self.protocol;
        let k = group.stack.k() as usize;
        let steps_per_epoch = self.steps_per_epoch();
        let first = epoch * steps_per_epoch;
        let last = ((epoch + 1) * steps_per_epoch).min(protocol.iterations);
        let steps = tally.so_far.losses.len();
        let losses = Vec::<f64>::try_from(
            Tensor::stack(&tally.so_far.losses, 0)
                .to_kind(Kind::Double)
                .to_device(Device::Cpu)
                .view([-1]),
        )?;
        let errors = Vec::<i64>::try_from(tally.so_far.errors.to_device(Device::Cpu))?;
        // the copies above waited for the device: training time only, before evaluation
        let images_per_s = (tally.timed_steps * protocol.batch_size) as f64
            / tally.started.elapsed().as_secs_f64();
        let evaluate = (epoch + 1) % protocol.eval_every_epochs == 0 || last == protocol.iterations;
        let test = if evaluate {
            Some(self.evaluate(&group.stack.net, k)?)
        } else {
            None
        };
        Ok(EpochNumbers {
            epoch,
            first,
            last,
            steps,
            losses,
            errors,
            images_per_s,
            test,
            wall_s: group.clock.wall_s(),
        })
    }

    /// Model `i`'s row of the epoch, written to `epochs.csv` and its events; a model whose
    /// loss stopped being finite in the epoch is said and recorded as `diverged` (its weights
    /// and `final.json`).
    fn record_member(
        &self,
        stack: &Stack,
        i: usize,
        member: &mut Member,
        numbers: &EpochNumbers,
        progress: &Progress,
        sweep: &mut Sweep,
    ) -> Result<()> {
        let k = stack.k() as usize;
        let own: Vec<f64> = (0..numbers.steps)
            .map(|s| numbers.losses[s * k + i])
            .collect();
        if let Some(bad) = own.iter().position(|l| !l.is_finite()) {
            member.diverged_at = Some(numbers.first + bad as i64 + 1);
        }
        member.rows.push(numbers.row(i, &own, self.protocol));
        member.pending.run.write_epochs(&member.rows)?;
        self.log_events(member);
        if let Some(at) = member.diverged_at {
            self.save_weights(stack, i, member)?;
            let line = format!(
                "{}/seed-{}: diverged at iteration {at} (the loss is not finite); \
                 recorded as `diverged`",
                self.variant.name, member.pending.seed
            );
            progress.say(&line);
            // it trained to the end of the epoch (where the weights just saved are)
            self.finish(
                member,
                Status::Diverged,
                numbers.last,
                numbers.wall_s,
                k,
                sweep,
            )?;
        }
        Ok(())
    }

    /// The epoch's line of progress, from a live member's `row`, with `images_per_s` of the
    /// whole stack.
    fn summary(&self, row: &EpochRow, epoch: i64, images_per_s: f64) -> String {
        let protocol = self.protocol;
        let steps_per_epoch = self.steps_per_epoch();
        let total_epochs = (protocol.iterations + steps_per_epoch - 1) / steps_per_epoch;
        let gates = row
            .gates()
            .map(|[a, b, c]| format!(" gates {a:.4}/{b:.4}/{c:.4}"))
            .unwrap_or_default();
        format!(
            "epoch {}/{total_epochs} loss {:.3} train {:.2}% test {}{gates} {:.0} img/s",
            epoch + 1,
            row.train_loss,
            row.train_error,
            row.test_error
                .map(|e| format!("{e:.2}%"))
                .unwrap_or_else(|| "-".into()),
            images_per_s
        )
    }

    /// After the last epoch, each live member's weights and `final.json`: `fail` when its last
    /// test error is above the protocol's threshold, else `ok`.
    fn finish_live(
        &self,
        stack: &Stack,
        members: &[Member],
        last: i64,
        wall_s: f64,
        sweep: &mut Sweep,
    ) -> Result<()> {
        let k = stack.k() as usize;
        for (i, member) in members.iter().enumerate() {
            if member.diverged_at.is_some() {
                continue;
            }
            self.save_weights(stack, i, member)?;
            let error = member
                .rows
                .last()
                .and_then(|r| r.test_error)
                .unwrap_or(f64::NAN);
            let status = if error > self.protocol.fail_above_percent {
                Status::Fail
            } else {
                Status::Ok
            };
            self.finish(member, status, last, wall_s, k, sweep)?;
        }
        Ok(())
    }

    /// The member's last row as TensorBoard scalars, at its iteration and the real time.
    fn log_events(&self, member: &mut Member) {
        let Some(events) = member.events.as_mut() else {
            return;
        };
        let Some(row) = member.rows.last() else {
            return;
        };
        let scalars = crate::tensorboard::row_scalars(row);
        if let Err(err) = events.append(row.iteration, unix_now_s(), &scalars) {
            log(&format!(
                "{}/seed-{}: TensorBoard events stop here ({err:#})",
                self.variant.name, member.pending.seed
            ));
            member.events = None;
        }
    }

    /// Model `i`'s trained weights as `model.ot`, written before `final.json`.
    fn save_weights(&self, stack: &Stack, i: usize, member: &Member) -> Result<()> {
        let k = stack.k();
        let named: Vec<(String, Tensor)> = stack
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.chunk(k, 0)[i].to_device(Device::Cpu)))
            .collect();
        checkpoint::write_tensors(&member.pending.run.weights_path(), &named)
    }

    /// Writes `final.json`; the checkpoint is no longer needed once the run is finished.
    fn finish(
        &self,
        member: &Member,
        status: Status,
        iterations: i64,
        wall_s: f64,
        stacked_with: usize,
        sweep: &mut Sweep,
    ) -> Result<()> {
        let last = member.rows.last();
        let tested = member.rows.iter().rev().find(|r| r.test_error.is_some());
        let record = FinalRecord {
            status,
            experiment: self.experiment.name.clone(),
            profile: self.profile.name.clone(),
            variant: self.variant.name.clone(),
            seed: member.pending.seed,
            iterations,
            diverged_at_iteration: member.diverged_at,
            final_test_error: if status == Status::Diverged {
                None
            } else {
                tested.and_then(|r| r.test_error)
            },
            final_test_loss: if status == Status::Diverged {
                None
            } else {
                tested.and_then(|r| r.test_loss)
            },
            final_train_error: last.map(|r| r.train_error),
            final_train_loss: last.map(|r| r.train_loss),
            fail_above_percent: self.protocol.fail_above_percent,
            wall_s,
            data: self.fingerprint.fingerprint.clone(),
            provenance: self.provenance.clone(),
            earlier_revisions: earlier_revisions(&member.trained_by).to_vec(),
            stacked_with,
            parameters: Some(self.parameters()?),
            stretches: Stretch::worth_recording(self.stretches(member, stacked_with, iterations)),
            precision: self.protocol.precision,
            bn_relu: Some(models::fused::bn_relu_on(self.options.device)),
            finished_at_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            // written just before (save_weights), checked whenever the run is read
            weights: Some(spec::FileDigest::of(&member.pending.run.weights_path())?),
        };
        member.pending.run.write_final(&record)?;
        let _ = std::fs::remove_file(member.pending.run.checkpoint_path());
        let name = format!("{}/seed-{}", self.variant.name, member.pending.seed);
        sweep.finished.push((name, record));
        Ok(())
    }
}
