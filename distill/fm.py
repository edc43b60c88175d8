"""Function matching (Beyer et al., CVPR 2022, "Knowledge distillation: A good teacher is patient and
consistent"): teacher and student see exactly the same view, a mixup of two augmented images, and
the student fits the teacher's distribution with KL only (no labels), at T=1, over long schedules.

The shared mixup view is made by the batch sampler (`mixup` below is what this method asks of it),
so the teacher's online forward runs on the very batch the student sees."""
from distill.base import Distiller
from distill.kd import soft_kl


def fm_loss(student_logits, teacher_logits, temperature: float) -> dict:
    """T^2 * KL(p_teacher^T || p_student^T), batch-mean: the soft term of KD alone."""
    return {"kl": soft_kl(student_logits, teacher_logits, temperature)}


class FunctionMatching(Distiller):
    name = "fm"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        self.temperature, self.mixup = cfg.fm_temperature, cfg.fm_mixup

    def forward_train(self, x, y, teacher_out, epoch):
        logits = self.student(x)
        return logits, fm_loss(logits.float(), teacher_out.logits, self.temperature)
